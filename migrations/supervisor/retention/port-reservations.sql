DELETE FROM supervisor.port_reservations WHERE ctid = ANY(%(tids)s::tid[])
