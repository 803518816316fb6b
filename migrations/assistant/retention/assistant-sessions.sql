-- Their confirmations and legacy tokens go with them (ON DELETE CASCADE).
DELETE FROM assistant.sessions WHERE ctid = ANY(%(tids)s::tid[])
