-- Undo supervisor/0006_port_pool: back to 0003's allocator (range row lock and gap search).

SET LOCAL search_path = supervisor, public;

DROP FUNCTION allocate_service_port(VARCHAR, VARCHAR, VARCHAR, VARCHAR, VARCHAR, VARCHAR, INTEGER, INTERVAL);
DROP FUNCTION reserve_port(UUID, UUID, VARCHAR, INTERVAL, VARCHAR, INTEGER);

CREATE OR REPLACE FUNCTION find_available_port(
    p_range_id UUID,
    p_hostname VARCHAR DEFAULT 'localhost',
    p_protocol VARCHAR DEFAULT 'tcp'
)
RETURNS INTEGER
LANGUAGE plpgsql
STABLE
SET search_path = supervisor, public
AS $$
DECLARE
    v_range port_ranges%ROWTYPE;
    v_port  INTEGER;
BEGIN
    SELECT * INTO v_range FROM port_ranges WHERE id = p_range_id;
    IF NOT FOUND OR NOT v_range.is_active THEN
        RAISE EXCEPTION 'port range % does not exist or is not active', p_range_id
            USING ERRCODE = 'MP001';
    END IF;

    SELECT candidate.port INTO v_port
      FROM generate_series(v_range.start_port, v_range.end_port) AS candidate (port)
     WHERE NOT EXISTS (
               SELECT 1
                 FROM port_allocations AS a
                WHERE a.port_number = candidate.port
                  AND a.hostname = lower(p_hostname)
                  AND a.protocol = lower(p_protocol)
                  AND a.status IN ('allocated', 'in_use'))
       AND NOT EXISTS (
               SELECT 1
                 FROM port_reservations AS r
                WHERE r.port_number = candidate.port
                  AND r.expires_at > now())
     ORDER BY candidate.port
     LIMIT 1;

    RETURN v_port;
END;
$$;

DROP FUNCTION allocate_port(UUID, UUID, VARCHAR, VARCHAR, VARCHAR, VARCHAR, INTEGER, INTERVAL);

CREATE FUNCTION allocate_port(
    p_project_id   UUID,
    p_range_id     UUID,
    p_service_name VARCHAR,
    p_service_type VARCHAR DEFAULT NULL,
    p_hostname     VARCHAR DEFAULT 'localhost',
    p_protocol     VARCHAR DEFAULT 'tcp'
)
RETURNS INTEGER
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
DECLARE
    v_range          port_ranges%ROWTYPE;
    v_hostname       VARCHAR := lower(p_hostname);
    v_protocol       VARCHAR := lower(p_protocol);
    v_port           INTEGER;
    v_reservation_id UUID;
BEGIN
    -- Serialise allocations from this range: concurrent callers wait here, then see the
    -- allocations committed before them.
    SELECT * INTO v_range FROM port_ranges WHERE id = p_range_id FOR UPDATE;
    IF NOT FOUND OR NOT v_range.is_active THEN
        RAISE EXCEPTION 'port range % does not exist or is not active', p_range_id
            USING ERRCODE = 'MP001';
    END IF;

    -- Idempotent: the service already holds a port of this range.
    SELECT a.port_number INTO v_port
      FROM port_allocations AS a
     WHERE a.project_id = p_project_id
       AND a.port_range_id = p_range_id
       AND a.service_name = p_service_name
       AND a.hostname = v_hostname
       AND a.protocol = v_protocol
       AND a.status IN ('allocated', 'in_use')
     ORDER BY a.port_number
     LIMIT 1;
    IF FOUND THEN
        RETURN v_port;
    END IF;

    -- A port reserved for this service, still free on this hostname/protocol.
    SELECT r.id, r.port_number INTO v_reservation_id, v_port
      FROM port_reservations AS r
     WHERE r.project_id = p_project_id
       AND r.port_range_id = p_range_id
       AND r.service_name = p_service_name
       AND r.expires_at > now()
       AND NOT EXISTS (
               SELECT 1
                 FROM port_allocations AS a
                WHERE a.port_number = r.port_number
                  AND a.hostname = v_hostname
                  AND a.protocol = v_protocol
                  AND a.status IN ('allocated', 'in_use'))
     ORDER BY r.port_number
     LIMIT 1;
    IF FOUND THEN
        DELETE FROM port_reservations WHERE id = v_reservation_id;
    ELSE
        v_port := find_available_port(p_range_id, v_hostname, v_protocol);
        IF v_port IS NULL THEN
            RAISE EXCEPTION 'no free port left in port range % (%-%)',
                v_range.range_name, v_range.start_port, v_range.end_port
                USING ERRCODE = 'MP002';
        END IF;
    END IF;

    INSERT INTO port_allocations
        (project_id, port_range_id, port_number, service_name, service_type, hostname, protocol)
    VALUES
        (p_project_id, p_range_id, v_port, p_service_name, p_service_type, v_hostname, v_protocol);

    RETURN v_port;
END;
$$;

DROP TRIGGER sync_port_allocations_pool ON port_allocations;
DROP FUNCTION sync_port_pool();
DROP FUNCTION ensure_port_pool(UUID, VARCHAR, VARCHAR);
DROP TABLE port_pool;
DROP TABLE port_pools;
DROP INDEX idx_port_allocations_active_service;
DROP INDEX idx_port_allocations_lease_expires_at;
ALTER TABLE port_allocations DROP COLUMN lease_expires_at;
ALTER TABLE port_ranges DROP COLUMN cooldown_seconds;
