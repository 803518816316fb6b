UPDATE assistant.confirmations SET status = 'expired', resolved_at = now()
 WHERE ctid = ANY(%(tids)s::tid[]) AND status = 'pending'
