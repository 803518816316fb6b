-- supervisor-service (document 003), its migration 003: port_ranges, port_allocations,
-- port_health_checks, port_reservations, the functions find_available_port, allocate_port,
-- release_port and cleanup_expired_reservations, and the views port_range_utilization and
-- active_port_allocations.
--
-- Conventions as in supervisor/0001 (UUID ids, TIMESTAMPTZ, metadata a JSONB object,
-- idx_<table>_<column> index names, update_<table>_updated_at triggers). Choices made here:
-- * Ports are INTEGER CHECK (BETWEEN 1 AND 65535); port_ranges has end_port >= start_port,
--   range_name VARCHAR(100) NOT NULL UNIQUE, is_active BOOLEAN NOT NULL DEFAULT true, and two
--   ACTIVE ranges may not overlap (exclusion constraint port_ranges_no_overlap on
--   int4range(start_port, end_port, '[]'); the range types' GiST support is built in).
--   idx_port_ranges_start_end is (start_port, end_port).
-- * port_allocations: project_id NOT NULL, ON DELETE CASCADE (a deleted project's ports become
--   free); port_range_id NOT NULL, ON DELETE RESTRICT (every allocation comes from a range, and
--   a range with allocations, even released ones, cannot be deleted: deactivate it instead);
--   service_name VARCHAR(255) NOT NULL; service_type VARCHAR(100) an open vocabulary (mcp, api,
--   websocket, database, ...); status VARCHAR(20) NOT NULL DEFAULT 'allocated' CHECK IN
--   ('allocated', 'in_use', 'released'), with released_at set exactly when status is
--   'released' (CHECK); process_id INTEGER > 0; hostname VARCHAR(255) NOT NULL DEFAULT
--   'localhost', lower case; protocol VARCHAR(10) NOT NULL DEFAULT 'tcp' CHECK IN ('tcp', 'udp').
--   hostname and protocol are NOT NULL so that the uniqueness below cannot be dodged with NULLs.
-- * port_health_checks: port_allocation_id NOT NULL, ON DELETE CASCADE; check_type VARCHAR(20)
--   CHECK IN ('tcp', 'udp', 'http', 'https'); status VARCHAR(20) CHECK IN ('healthy',
--   'unhealthy', 'timeout'); append-only (no updated_at); checked_at NOT NULL DEFAULT now().
-- * port_reservations: project_id NOT NULL, ON DELETE CASCADE; port_range_id NOT NULL, ON
--   DELETE RESTRICT; service_name and reserved_by VARCHAR(255) NOT NULL; expires_at NOT NULL and
--   later than created_at. A reservation holds the port number on every hostname and protocol.
--   Two reservations of one port may not overlap in time (exclusion constraint
--   port_reservations_no_overlap on int4range(port_number, port_number, '[]') and
--   tstzrange(created_at, expires_at)); an expired reservation that cleanup has not deleted yet
--   does not block a new one.
-- * Triggers check_port_allocations_port_in_range / check_port_reservations_port_in_range
--   (function check_port_in_range) reject a port_number outside its range's bounds.
-- Fixes of the document (the project's ports issue):
-- * The document's UNIQUE (port_number, hostname, protocol) covered released rows too, so a
--   released port could never be allocated again unless its history row was deleted. It holds
--   for ACTIVE allocations only: the partial unique index idx_port_allocations_active_port
--   (port_number, hostname, protocol) WHERE status IN ('allocated', 'in_use'). Released rows
--   are kept as history and the port is reused.
-- * release_port(port_number, hostname, protocol) takes the protocol too (DEFAULT 'tcp'), so
--   releasing 5000/tcp does not also release 5000/udp; hostname defaults to 'localhost'.
-- * allocate_port is safe under concurrency: it locks the range row (SELECT ... FOR UPDATE), so
--   allocations from one range are serialised (ranges do not overlap, so no two ranges hand out
--   one port), then takes the LOWEST free port; the partial unique index is the last guard (a
--   REPEATABLE READ / SERIALIZABLE caller that loses a race gets a unique violation to retry).
--   Reservations inserted into the range wait for that lock too (their foreign key check).
-- Functions (hostname and protocol arguments are lower-cased):
-- * find_available_port(range_id, hostname DEFAULT 'localhost', protocol DEFAULT 'tcp')
--   returns the lowest port of the range with no active allocation on that hostname/protocol
--   and no unexpired reservation, or NULL when the range is full. It takes no lock (a probe).
-- * allocate_port(project_id, range_id, service_name, service_type DEFAULT NULL,
--   hostname DEFAULT 'localhost', protocol DEFAULT 'tcp') returns the port. It is idempotent:
--   when the project's service already holds an active port of this range on that
--   hostname/protocol, that port is returned. Otherwise an unexpired reservation of the same
--   project, range and service_name is used (and deleted); otherwise the lowest free port.
-- * Errors: SQLSTATE 'MP001' = the range does not exist or is not active; 'MP002' = no free
--   port left in the range (minnoctl maps both to a user error).
-- * release_port(...) returns true when an active allocation was released, false otherwise.
-- * cleanup_expired_reservations() deletes reservations with expires_at <= now() and returns
--   how many it deleted.
-- Views:
-- * port_range_utilization (active ranges): allocated_ports = distinct ports of the range with
--   an active allocation (on any hostname/protocol); released_ports = released allocations kept
--   as history; reserved_ports = unexpired reservations; utilization_percent = allocated_ports
--   / total_ports * 100, two decimals. Counted in separate subqueries, so one count does not
--   multiply another.
-- * active_port_allocations: allocations with status 'allocated' or 'in_use', with their
--   project's name and range's name, ordered by port.
-- depends: 0002_secrets_management

SET LOCAL search_path = supervisor, public;

CREATE TABLE port_ranges (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    range_name  VARCHAR(100) NOT NULL CHECK (range_name <> ''),
    start_port  INTEGER NOT NULL CHECK (start_port BETWEEN 1 AND 65535),
    end_port    INTEGER NOT NULL CHECK (end_port BETWEEN 1 AND 65535),
    description TEXT,
    is_active   BOOLEAN NOT NULL DEFAULT true,
    metadata    JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT port_ranges_range_name_key UNIQUE (range_name),
    CONSTRAINT port_ranges_bounds CHECK (end_port >= start_port),
    CONSTRAINT port_ranges_no_overlap
        EXCLUDE USING gist (int4range(start_port, end_port, '[]') WITH &&) WHERE (is_active)
);

CREATE INDEX idx_port_ranges_is_active ON port_ranges (is_active);
CREATE INDEX idx_port_ranges_start_end ON port_ranges (start_port, end_port);

CREATE TABLE port_allocations (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id    UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    port_range_id UUID NOT NULL REFERENCES port_ranges (id) ON DELETE RESTRICT,
    port_number   INTEGER NOT NULL CHECK (port_number BETWEEN 1 AND 65535),
    service_name  VARCHAR(255) NOT NULL CHECK (service_name <> ''),
    service_type  VARCHAR(100),
    status        VARCHAR(20) NOT NULL DEFAULT 'allocated'
                  CHECK (status IN ('allocated', 'in_use', 'released')),
    process_id    INTEGER CHECK (process_id > 0),
    hostname      VARCHAR(255) NOT NULL DEFAULT 'localhost'
                  CHECK (hostname <> '' AND hostname = lower(hostname)),
    protocol      VARCHAR(10) NOT NULL DEFAULT 'tcp' CHECK (protocol IN ('tcp', 'udp')),
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    allocated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at  TIMESTAMPTZ,
    released_at   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT port_allocations_released_at
        CHECK ((status = 'released') = (released_at IS NOT NULL))
);

CREATE UNIQUE INDEX idx_port_allocations_active_port
    ON port_allocations (port_number, hostname, protocol)
    WHERE status IN ('allocated', 'in_use');
CREATE INDEX idx_port_allocations_project_id ON port_allocations (project_id);
CREATE INDEX idx_port_allocations_port_number ON port_allocations (port_number);
CREATE INDEX idx_port_allocations_service_name ON port_allocations (service_name);
CREATE INDEX idx_port_allocations_status ON port_allocations (status);
CREATE INDEX idx_port_allocations_hostname ON port_allocations (hostname);

CREATE TABLE port_health_checks (
    id                 UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    port_allocation_id UUID NOT NULL REFERENCES port_allocations (id) ON DELETE CASCADE,
    check_type         VARCHAR(20) NOT NULL CHECK (check_type IN ('tcp', 'udp', 'http', 'https')),
    status             VARCHAR(20) NOT NULL CHECK (status IN ('healthy', 'unhealthy', 'timeout')),
    response_time_ms   INTEGER CHECK (response_time_ms >= 0),
    error_message      TEXT,
    metadata           JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    checked_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_port_health_checks_port_allocation_id ON port_health_checks (port_allocation_id);
CREATE INDEX idx_port_health_checks_status ON port_health_checks (status);
CREATE INDEX idx_port_health_checks_checked_at ON port_health_checks (checked_at);

CREATE TABLE port_reservations (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id    UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    port_range_id UUID NOT NULL REFERENCES port_ranges (id) ON DELETE RESTRICT,
    port_number   INTEGER NOT NULL CHECK (port_number BETWEEN 1 AND 65535),
    service_name  VARCHAR(255) NOT NULL CHECK (service_name <> ''),
    reserved_by   VARCHAR(255) NOT NULL CHECK (reserved_by <> ''),
    expires_at    TIMESTAMPTZ NOT NULL,
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT port_reservations_expiry CHECK (expires_at > created_at),
    CONSTRAINT port_reservations_no_overlap EXCLUDE USING gist (
        int4range(port_number, port_number, '[]') WITH &&,
        tstzrange(created_at, expires_at) WITH &&
    )
);

CREATE INDEX idx_port_reservations_project_id ON port_reservations (project_id);
CREATE INDEX idx_port_reservations_port_number ON port_reservations (port_number);
CREATE INDEX idx_port_reservations_expires_at ON port_reservations (expires_at);

CREATE FUNCTION check_port_in_range()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
          FROM port_ranges
         WHERE id = NEW.port_range_id
           AND NEW.port_number BETWEEN start_port AND end_port
    ) THEN
        RAISE EXCEPTION 'port % is outside port range %', NEW.port_number, NEW.port_range_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER check_port_allocations_port_in_range
    BEFORE INSERT OR UPDATE OF port_range_id, port_number ON port_allocations
    FOR EACH ROW EXECUTE FUNCTION check_port_in_range();
CREATE TRIGGER check_port_reservations_port_in_range
    BEFORE INSERT OR UPDATE OF port_range_id, port_number ON port_reservations
    FOR EACH ROW EXECUTE FUNCTION check_port_in_range();

CREATE FUNCTION find_available_port(
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

CREATE FUNCTION release_port(
    p_port_number INTEGER,
    p_hostname    VARCHAR DEFAULT 'localhost',
    p_protocol    VARCHAR DEFAULT 'tcp'
)
RETURNS BOOLEAN
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
BEGIN
    UPDATE port_allocations
       SET status = 'released',
           released_at = now()
     WHERE port_number = p_port_number
       AND hostname = lower(p_hostname)
       AND protocol = lower(p_protocol)
       AND status IN ('allocated', 'in_use');
    RETURN FOUND;
END;
$$;

CREATE FUNCTION cleanup_expired_reservations()
RETURNS INTEGER
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
DECLARE
    v_deleted INTEGER;
BEGIN
    DELETE FROM port_reservations WHERE expires_at <= now();
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END;
$$;

CREATE TRIGGER update_port_ranges_updated_at
    BEFORE UPDATE ON port_ranges
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_port_allocations_updated_at
    BEFORE UPDATE ON port_allocations
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_port_reservations_updated_at
    BEFORE UPDATE ON port_reservations
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE VIEW port_range_utilization AS
SELECT
    pr.id                             AS range_id,
    pr.range_name,
    pr.start_port,
    pr.end_port,
    pr.end_port - pr.start_port + 1   AS total_ports,
    a.allocated_ports,
    a.released_ports,
    r.reserved_ports,
    round(100.0 * a.allocated_ports / (pr.end_port - pr.start_port + 1), 2) AS utilization_percent
FROM port_ranges AS pr
CROSS JOIN LATERAL (
    SELECT count(DISTINCT pa.port_number) FILTER (WHERE pa.status IN ('allocated', 'in_use'))
               AS allocated_ports,
           count(*) FILTER (WHERE pa.status = 'released') AS released_ports
    FROM port_allocations AS pa
    WHERE pa.port_range_id = pr.id
) AS a
CROSS JOIN LATERAL (
    SELECT count(*) AS reserved_ports
    FROM port_reservations AS res
    WHERE res.port_range_id = pr.id
      AND res.expires_at > now()
) AS r
WHERE pr.is_active
ORDER BY pr.start_port;

CREATE VIEW active_port_allocations AS
SELECT
    pa.id,
    pa.port_number,
    pa.service_name,
    pa.service_type,
    pa.status,
    pa.hostname,
    pa.protocol,
    pa.allocated_at,
    pa.last_used_at,
    p.name        AS project_name,
    pr.range_name
FROM port_allocations AS pa
JOIN projects AS p ON p.id = pa.project_id
JOIN port_ranges AS pr ON pr.id = pa.port_range_id
WHERE pa.status IN ('allocated', 'in_use')
ORDER BY pa.port_number, pa.hostname, pa.protocol;
