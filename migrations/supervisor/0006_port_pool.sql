-- An allocator that never hands out one port twice and whose cost stays flat as a range fills.
--
-- allocate_port of 0003 serialised every allocation of a range on the range's row lock and then
-- searched the range for the lowest gap (generate_series + NOT EXISTS): correct, but one at a
-- time and slower the fuller the range (the "advisory lock with a gap search" of the ports issue).
-- This migration replaces it with a pool of free ports taken with FOR UPDATE SKIP LOCKED:
-- * port_pool holds one row per free port of a range, per hostname and protocol, with the time it
--   becomes available (released ports come back after the range's cooldown). A pool is made the
--   first time a range is used on a hostname/protocol (port_pools records which pools exist).
--   Allocating deletes the lowest available row, skipping rows other allocators hold, so
--   concurrent allocators take different ports without waiting for each other.
-- * A trigger on port_allocations keeps the pool in step whatever writes the table (minnoctl,
--   this function, an application's own INSERT): an active allocation takes its port out of the
--   pool; a release (or a deleted active row) puts it back after the cooldown.
-- * The partial unique index idx_port_allocations_active_port (0003) stays the last guard: a pool
--   row that went stale (a port allocated by a writer racing with the pool's creation) fails the
--   INSERT with a unique violation, is dropped from the pool, and the next port is taken.
-- * Idempotence: one active allocation per project, service, hostname and protocol
--   (idx_port_allocations_active_service); concurrent calls for the same service serialise on a
--   transaction advisory lock of that key, and the second gets the first one's port.
-- * port_ranges.cooldown_seconds (default 60): how long a released port stays out of automatic
--   allocation. port_allocations.lease_expires_at: an allocation may be a lease; an expired lease
--   holds its port until cleanup releases it (the cleanup issue).
-- * Which service types a range serves: metadata.service_types (a JSON array), as the seed writes.
-- Errors (SQLSTATE): MP001 range missing or inactive; MP002 range full (or every free port
-- cooling down or reserved); MP004 port outside the range; MP005 the service already holds
-- another port; MP006 the port is held by another service (the message names it); MP007 the
-- port is reserved for another service; MP008 the port is cooling down after its release.
-- depends: 0005_field_key_guard

SET LOCAL search_path = supervisor, public;

ALTER TABLE port_ranges
    ADD COLUMN cooldown_seconds INTEGER NOT NULL DEFAULT 60 CHECK (cooldown_seconds >= 0);

ALTER TABLE port_allocations ADD COLUMN lease_expires_at TIMESTAMPTZ;

CREATE INDEX idx_port_allocations_lease_expires_at ON port_allocations (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL AND status IN ('allocated', 'in_use');

CREATE UNIQUE INDEX idx_port_allocations_active_service
    ON port_allocations (project_id, service_name, hostname, protocol)
    WHERE status IN ('allocated', 'in_use');

CREATE TABLE port_pools (
    port_range_id UUID NOT NULL REFERENCES port_ranges (id) ON DELETE CASCADE,
    hostname      VARCHAR(255) NOT NULL CHECK (hostname <> '' AND hostname = lower(hostname)),
    protocol      VARCHAR(10) NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (port_range_id, hostname, protocol)
);

CREATE TABLE port_pool (
    port_range_id UUID NOT NULL,
    hostname      VARCHAR(255) NOT NULL,
    protocol      VARCHAR(10) NOT NULL,
    port_number   INTEGER NOT NULL CHECK (port_number BETWEEN 1 AND 65535),
    available_at  TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (port_range_id, hostname, protocol, port_number),
    FOREIGN KEY (port_range_id, hostname, protocol)
        REFERENCES port_pools (port_range_id, hostname, protocol) ON DELETE CASCADE
);

-- Make the pool of a range on a hostname/protocol the first time it is used: every port of the
-- range without an active allocation there, each available after its last release's cooldown.
CREATE FUNCTION ensure_port_pool(p_range_id UUID, p_hostname VARCHAR, p_protocol VARCHAR)
RETURNS VOID
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
DECLARE
    v_range port_ranges%ROWTYPE;
BEGIN
    PERFORM 1 FROM port_pools
     WHERE port_range_id = p_range_id AND hostname = p_hostname AND protocol = p_protocol;
    IF FOUND THEN
        RETURN;
    END IF;
    -- a concurrent creator makes this wait until it commits, then do nothing
    INSERT INTO port_pools (port_range_id, hostname, protocol) VALUES (p_range_id, p_hostname, p_protocol)
        ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO v_range FROM port_ranges WHERE id = p_range_id;
    INSERT INTO port_pool (port_range_id, hostname, protocol, port_number, available_at)
    SELECT p_range_id, p_hostname, p_protocol, g.port,
           coalesce((SELECT max(a.released_at) + make_interval(secs => v_range.cooldown_seconds)
                       FROM port_allocations a
                      WHERE a.port_number = g.port AND a.hostname = p_hostname AND a.protocol = p_protocol
                        AND a.status = 'released'), '-infinity')
      FROM generate_series(v_range.start_port, v_range.end_port) AS g (port)
     WHERE NOT EXISTS (SELECT 1 FROM port_allocations a
                        WHERE a.port_number = g.port AND a.hostname = p_hostname AND a.protocol = p_protocol
                          AND a.status IN ('allocated', 'in_use'));
END;
$$;

CREATE FUNCTION sync_port_pool()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
DECLARE
    v_cooldown INTEGER;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status IN ('allocated', 'in_use')
       AND (TG_OP = 'INSERT' OR OLD.status = 'released' OR OLD.port_number <> NEW.port_number
            OR OLD.hostname <> NEW.hostname OR OLD.protocol <> NEW.protocol) THEN
        DELETE FROM port_pool
         WHERE hostname = NEW.hostname AND protocol = NEW.protocol AND port_number = NEW.port_number
           AND port_range_id IN (SELECT id FROM port_ranges WHERE NEW.port_number BETWEEN start_port AND end_port);
    END IF;
    IF (TG_OP = 'DELETE' AND OLD.status IN ('allocated', 'in_use'))
       OR (TG_OP = 'UPDATE' AND OLD.status IN ('allocated', 'in_use')
           AND (NEW.status = 'released' OR OLD.port_number <> NEW.port_number
                OR OLD.hostname <> NEW.hostname OR OLD.protocol <> NEW.protocol)) THEN
        SELECT cooldown_seconds INTO v_cooldown FROM port_ranges WHERE id = OLD.port_range_id;
        INSERT INTO port_pool (port_range_id, hostname, protocol, port_number, available_at)
        SELECT OLD.port_range_id, OLD.hostname, OLD.protocol, OLD.port_number,
               now() + make_interval(secs => coalesce(v_cooldown, 0))
         WHERE EXISTS (SELECT 1 FROM port_pools
                        WHERE port_range_id = OLD.port_range_id AND hostname = OLD.hostname
                          AND protocol = OLD.protocol)
        ON CONFLICT (port_range_id, hostname, protocol, port_number)
            DO UPDATE SET available_at = excluded.available_at;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER sync_port_allocations_pool
    AFTER INSERT OR UPDATE OF status, port_number, hostname, protocol OR DELETE ON port_allocations
    FOR EACH ROW EXECUTE FUNCTION sync_port_pool();

DROP FUNCTION allocate_port(UUID, UUID, VARCHAR, VARCHAR, VARCHAR, VARCHAR);

-- allocate_port(project, range, service, service_type, hostname, protocol, port, lease): the
-- port of the service (its existing allocation, its reservation, the port asked for, or the
-- lowest available port of the range). Idempotent; safe under any concurrency.
CREATE FUNCTION allocate_port(
    p_project_id   UUID,
    p_range_id     UUID,
    p_service_name VARCHAR,
    p_service_type VARCHAR DEFAULT NULL,
    p_hostname     VARCHAR DEFAULT 'localhost',
    p_protocol     VARCHAR DEFAULT 'tcp',
    p_port         INTEGER DEFAULT NULL,
    p_lease        INTERVAL DEFAULT NULL
)
RETURNS INTEGER
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
DECLARE
    v_range    port_ranges%ROWTYPE;
    v_hostname VARCHAR := lower(p_hostname);
    v_protocol VARCHAR := lower(p_protocol);
    v_port     INTEGER;
    v_reserved UUID;  -- the service's own reservation, when it takes its reserved port
    v_held_id  UUID;
    v_held     INTEGER;
    v_service  VARCHAR;
    v_project  VARCHAR;
    v_until    TIMESTAMPTZ;
    v_lease    TIMESTAMPTZ := CASE WHEN p_lease IS NULL THEN NULL ELSE now() + p_lease END;
BEGIN
    -- No row lock on the range: allocators must not wait for each other. The foreign key of the
    -- INSERT below keeps the range from being deleted meanwhile.
    SELECT * INTO v_range FROM port_ranges WHERE id = p_range_id;
    IF NOT FOUND OR NOT v_range.is_active THEN
        RAISE EXCEPTION 'port range % does not exist or is not active', p_range_id USING ERRCODE = 'MP001';
    END IF;
    IF p_port IS NOT NULL AND p_port NOT BETWEEN v_range.start_port AND v_range.end_port THEN
        RAISE EXCEPTION 'port % is outside range % (%-%)', p_port, v_range.range_name, v_range.start_port,
            v_range.end_port USING ERRCODE = 'MP004';
    END IF;
    -- whether the service's existing port came back (read by allocate_service_port)
    PERFORM set_config('minnoctl.port_state', 'new', true);

    -- Idempotent: one caller per service at a time; the service's active port comes back.
    PERFORM pg_advisory_xact_lock(hashtextextended(
        'minnoctl-port:' || p_project_id || '/' || p_service_name || '/' || v_hostname || '/' || v_protocol, 0));
    SELECT a.id, a.port_number INTO v_held_id, v_held
      FROM port_allocations AS a
     WHERE a.project_id = p_project_id AND a.service_name = p_service_name
       AND a.hostname = v_hostname AND a.protocol = v_protocol AND a.status IN ('allocated', 'in_use');
    IF FOUND THEN
        IF p_port IS NOT NULL AND p_port <> v_held THEN
            RAISE EXCEPTION 'service % already holds port %; release it first to take port %', p_service_name,
                v_held, p_port USING ERRCODE = 'MP005';
        END IF;
        IF v_lease IS NOT NULL THEN
            UPDATE port_allocations SET lease_expires_at = v_lease, last_used_at = now() WHERE id = v_held_id;
        END IF;
        PERFORM set_config('minnoctl.port_state', 'existing', true);
        RETURN v_held;
    END IF;

    PERFORM ensure_port_pool(p_range_id, v_hostname, v_protocol);

    -- A port reserved for this service (or the one asked for): taken whatever its cooldown.
    IF p_port IS NULL THEN
        SELECT r.id, r.port_number INTO v_reserved, p_port
          FROM port_reservations AS r
         WHERE r.project_id = p_project_id AND r.port_range_id = p_range_id
           AND r.service_name = p_service_name AND r.expires_at > now()
         ORDER BY r.port_number LIMIT 1;
    END IF;

    IF p_port IS NOT NULL THEN
        SELECT a.service_name, p.name INTO v_service, v_project
          FROM port_allocations AS a JOIN projects AS p ON p.id = a.project_id
         WHERE a.port_number = p_port AND a.hostname = v_hostname AND a.protocol = v_protocol
           AND a.status IN ('allocated', 'in_use');
        IF FOUND THEN
            IF v_reserved IS NULL THEN
                RAISE EXCEPTION 'port %/% on % is held by service % of project %', p_port, v_protocol, v_hostname,
                    v_service, v_project USING ERRCODE = 'MP006';
            END IF;
            p_port := NULL;  -- its reserved port went to someone else here: take any
        END IF;
    END IF;
    IF p_port IS NOT NULL THEN
        IF v_reserved IS NULL THEN
            SELECT r.service_name, p.name INTO v_service, v_project
              FROM port_reservations AS r JOIN projects AS p ON p.id = r.project_id
             WHERE r.port_number = p_port AND r.expires_at > now()
               AND NOT (r.project_id = p_project_id AND r.service_name = p_service_name);
            IF FOUND THEN
                RAISE EXCEPTION 'port % is reserved for service % of project %', p_port, v_service, v_project
                    USING ERRCODE = 'MP007';
            END IF;
            SELECT available_at INTO v_until FROM port_pool
             WHERE port_range_id = p_range_id AND hostname = v_hostname AND protocol = v_protocol
               AND port_number = p_port AND available_at > now();
            IF FOUND THEN
                RAISE EXCEPTION 'port % was released recently and cools down until %', p_port, v_until
                    USING ERRCODE = 'MP008';
            END IF;
        END IF;
        DELETE FROM port_pool
         WHERE port_range_id = p_range_id AND hostname = v_hostname AND protocol = v_protocol
           AND port_number = p_port;
        DELETE FROM port_reservations WHERE id = v_reserved;
        INSERT INTO port_allocations (project_id, port_range_id, port_number, service_name, service_type,
                                      hostname, protocol, lease_expires_at)
        VALUES (p_project_id, p_range_id, p_port, p_service_name, p_service_type, v_hostname, v_protocol, v_lease);
        RETURN p_port;
    END IF;

    LOOP
        DELETE FROM port_pool
         WHERE ctid = (SELECT f.ctid FROM port_pool AS f
                        WHERE f.port_range_id = p_range_id AND f.hostname = v_hostname
                          AND f.protocol = v_protocol AND f.available_at <= now()
                          AND NOT EXISTS (SELECT 1 FROM port_reservations AS r
                                           WHERE r.port_number = f.port_number AND r.expires_at > now())
                        ORDER BY f.port_number
                        LIMIT 1
                        FOR UPDATE SKIP LOCKED)
        RETURNING port_number INTO v_port;
        IF v_port IS NULL THEN
            RAISE EXCEPTION 'no free port left in port range % (%-%) on %/%', v_range.range_name,
                v_range.start_port, v_range.end_port, v_hostname, v_protocol USING ERRCODE = 'MP002';
        END IF;
        BEGIN
            INSERT INTO port_allocations (project_id, port_range_id, port_number, service_name, service_type,
                                          hostname, protocol, lease_expires_at)
            VALUES (p_project_id, p_range_id, v_port, p_service_name, p_service_type, v_hostname, v_protocol,
                    v_lease);
            RETURN v_port;
        EXCEPTION WHEN unique_violation THEN
            -- a stale pool row: the port is held by a row the pool did not know of; it stays out
            NULL;
        END;
    END LOOP;
END;
$$;

-- find_available_port now reads the pool too (still a probe: it takes no lock).
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
        RAISE EXCEPTION 'port range % does not exist or is not active', p_range_id USING ERRCODE = 'MP001';
    END IF;
    IF EXISTS (SELECT 1 FROM port_pools WHERE port_range_id = p_range_id AND hostname = lower(p_hostname)
                                          AND protocol = lower(p_protocol)) THEN
        SELECT f.port_number INTO v_port FROM port_pool AS f
         WHERE f.port_range_id = p_range_id AND f.hostname = lower(p_hostname) AND f.protocol = lower(p_protocol)
           AND f.available_at <= now()
           AND NOT EXISTS (SELECT 1 FROM port_reservations AS r
                            WHERE r.port_number = f.port_number AND r.expires_at > now())
         ORDER BY f.port_number LIMIT 1;
        RETURN v_port;
    END IF;
    SELECT candidate.port INTO v_port
      FROM generate_series(v_range.start_port, v_range.end_port) AS candidate (port)
     WHERE NOT EXISTS (SELECT 1 FROM port_allocations AS a
                        WHERE a.port_number = candidate.port AND a.hostname = lower(p_hostname)
                          AND a.protocol = lower(p_protocol)
                          AND (a.status IN ('allocated', 'in_use')
                               OR a.released_at > now() - make_interval(secs => v_range.cooldown_seconds)))
       AND NOT EXISTS (SELECT 1 FROM port_reservations AS r
                        WHERE r.port_number = candidate.port AND r.expires_at > now())
     ORDER BY candidate.port
     LIMIT 1;
    RETURN v_port;
END;
$$;

-- reserve_port(project, range, service, ttl, reserved_by, port): hold a port (on every hostname
-- and protocol) for a service until now() + ttl; the service's next allocation takes it.
CREATE FUNCTION reserve_port(
    p_project_id   UUID,
    p_range_id     UUID,
    p_service_name VARCHAR,
    p_ttl          INTERVAL,
    p_reserved_by  VARCHAR,
    p_port         INTEGER DEFAULT NULL
)
RETURNS INTEGER
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
DECLARE
    v_range port_ranges%ROWTYPE;
    v_port    INTEGER;
    v_service VARCHAR;
    v_project VARCHAR;
BEGIN
    SELECT * INTO v_range FROM port_ranges WHERE id = p_range_id;
    IF NOT FOUND OR NOT v_range.is_active THEN
        RAISE EXCEPTION 'port range % does not exist or is not active', p_range_id USING ERRCODE = 'MP001';
    END IF;
    IF p_port IS NOT NULL AND p_port NOT BETWEEN v_range.start_port AND v_range.end_port THEN
        RAISE EXCEPTION 'port % is outside range % (%-%)', p_port, v_range.range_name, v_range.start_port,
            v_range.end_port USING ERRCODE = 'MP004';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('minnoctl-reserve:' || p_range_id, 0));
    SELECT r.port_number INTO v_port FROM port_reservations r
     WHERE r.project_id = p_project_id AND r.port_range_id = p_range_id AND r.service_name = p_service_name
       AND r.expires_at > now() AND (p_port IS NULL OR r.port_number = p_port);
    IF FOUND THEN  -- idempotent: extend it
        UPDATE port_reservations SET expires_at = greatest(expires_at, now() + p_ttl)
         WHERE project_id = p_project_id AND port_range_id = p_range_id AND service_name = p_service_name
           AND port_number = v_port AND expires_at > now();
        RETURN v_port;
    END IF;
    IF p_port IS NOT NULL THEN
        SELECT a.service_name, p.name INTO v_service, v_project
          FROM port_allocations a JOIN projects p ON p.id = a.project_id
         WHERE a.port_number = p_port AND a.status IN ('allocated', 'in_use')
           AND NOT (a.project_id = p_project_id AND a.service_name = p_service_name);
        IF FOUND THEN
            RAISE EXCEPTION 'port % is held by service % of project %', p_port, v_service, v_project
                USING ERRCODE = 'MP006';
        END IF;
        SELECT r.service_name, p.name INTO v_service, v_project
          FROM port_reservations r JOIN projects p ON p.id = r.project_id
         WHERE r.port_number = p_port AND r.expires_at > now();
        IF FOUND THEN
            RAISE EXCEPTION 'port % is reserved for service % of project %', p_port, v_service, v_project
                USING ERRCODE = 'MP007';
        END IF;
        v_port := p_port;
    ELSE
        SELECT g.port INTO v_port
          FROM generate_series(v_range.start_port, v_range.end_port) AS g (port)
         WHERE NOT EXISTS (SELECT 1 FROM port_allocations a
                            WHERE a.port_number = g.port
                              AND (a.status IN ('allocated', 'in_use')
                                   OR a.released_at > now() - make_interval(secs => v_range.cooldown_seconds)))
           AND NOT EXISTS (SELECT 1 FROM port_reservations r WHERE r.port_number = g.port AND r.expires_at > now())
         ORDER BY g.port LIMIT 1;
        IF v_port IS NULL THEN
            RAISE EXCEPTION 'no free port left in port range % (%-%) to reserve', v_range.range_name,
                v_range.start_port, v_range.end_port USING ERRCODE = 'MP002';
        END IF;
    END IF;
    -- an expired reservation that cleanup has not deleted yet does not overlap [now, now + ttl)
    INSERT INTO port_reservations (project_id, port_range_id, port_number, service_name, reserved_by, expires_at)
    VALUES (p_project_id, p_range_id, v_port, p_service_name, p_reserved_by, now() + p_ttl);
    RETURN v_port;
END;
$$;

-- allocate_service_port: allocate_port by names, in one statement (one round trip for minnoctl),
-- saying whether the port is new or the service's existing one. The range is --range NAME, else
-- the active range serving the service type (metadata.service_types or its name), else the only
-- active range. More errors: MP009 unknown project; MP010 unknown range; MP011 no range serves
-- the service type; MP012 several active ranges and none chosen.
CREATE FUNCTION allocate_service_port(
    p_project      VARCHAR,
    p_range        VARCHAR,
    p_service_type VARCHAR,
    p_service_name VARCHAR,
    p_hostname     VARCHAR DEFAULT 'localhost',
    p_protocol     VARCHAR DEFAULT 'tcp',
    p_port         INTEGER DEFAULT NULL,
    p_lease        INTERVAL DEFAULT NULL
)
RETURNS TABLE (port INTEGER, state TEXT, range_name VARCHAR, lease_expires_at TIMESTAMPTZ)
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
DECLARE
    v_project  UUID;
    v_range    UUID;
    v_name     VARCHAR;
    v_hostname VARCHAR := lower(p_hostname);
    v_protocol VARCHAR := lower(p_protocol);
    v_port     INTEGER;
BEGIN
    SELECT id INTO v_project FROM projects WHERE name = p_project;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown project %', p_project USING ERRCODE = 'MP009';
    END IF;
    IF p_range IS NOT NULL THEN
        SELECT r.id, r.range_name INTO v_range, v_name FROM port_ranges r WHERE r.range_name = p_range;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown port range %', p_range USING ERRCODE = 'MP010';
        END IF;
    ELSIF p_service_type IS NOT NULL THEN
        SELECT r.id, r.range_name INTO v_range, v_name FROM port_ranges r
         WHERE r.is_active AND (r.metadata->'service_types' ? p_service_type OR r.range_name = p_service_type)
         ORDER BY r.start_port LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no active port range serves service type %', p_service_type USING ERRCODE = 'MP011';
        END IF;
    ELSE
        SELECT r.id, r.range_name INTO v_range, v_name FROM port_ranges r WHERE r.is_active;
        IF (SELECT count(*) FROM port_ranges WHERE is_active) <> 1 THEN
            RAISE EXCEPTION 'say which range' USING ERRCODE = 'MP012';
        END IF;
    END IF;
    v_port := allocate_port(v_project, v_range, p_service_name, p_service_type, v_hostname, v_protocol, p_port,
                            p_lease);
    RETURN QUERY
        SELECT v_port, current_setting('minnoctl.port_state'), v_name, a.lease_expires_at
          FROM port_allocations a
         WHERE a.project_id = v_project AND a.service_name = p_service_name AND a.hostname = v_hostname
           AND a.protocol = v_protocol AND a.status IN ('allocated', 'in_use');
END;
$$;
