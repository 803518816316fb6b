UPDATE supervisor.port_allocations SET status = 'released', released_at = now()
 WHERE ctid = ANY(%(tids)s::tid[]) AND status IN ('allocated', 'in_use')
