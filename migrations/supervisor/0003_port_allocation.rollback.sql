-- Undo supervisor/0003_port_allocation: drop the views, triggers, functions, indexes and tables,
-- in reverse order of creation. The constraints port_ranges_range_name_key,
-- port_ranges_no_overlap and port_reservations_no_overlap (and their indexes) go with their
-- tables.

SET LOCAL search_path = supervisor, public;

DROP VIEW active_port_allocations;
DROP VIEW port_range_utilization;

DROP TRIGGER update_port_reservations_updated_at ON port_reservations;
DROP TRIGGER update_port_allocations_updated_at ON port_allocations;
DROP TRIGGER update_port_ranges_updated_at ON port_ranges;

DROP FUNCTION cleanup_expired_reservations();
DROP FUNCTION release_port(INTEGER, VARCHAR, VARCHAR);
DROP FUNCTION allocate_port(UUID, UUID, VARCHAR, VARCHAR, VARCHAR, VARCHAR);
DROP FUNCTION find_available_port(UUID, VARCHAR, VARCHAR);

DROP TRIGGER check_port_reservations_port_in_range ON port_reservations;
DROP TRIGGER check_port_allocations_port_in_range ON port_allocations;
DROP FUNCTION check_port_in_range();

DROP INDEX idx_port_reservations_expires_at;
DROP INDEX idx_port_reservations_port_number;
DROP INDEX idx_port_reservations_project_id;
DROP TABLE port_reservations;

DROP INDEX idx_port_health_checks_checked_at;
DROP INDEX idx_port_health_checks_status;
DROP INDEX idx_port_health_checks_port_allocation_id;
DROP TABLE port_health_checks;

DROP INDEX idx_port_allocations_hostname;
DROP INDEX idx_port_allocations_status;
DROP INDEX idx_port_allocations_service_name;
DROP INDEX idx_port_allocations_port_number;
DROP INDEX idx_port_allocations_project_id;
DROP INDEX idx_port_allocations_active_port;
DROP TABLE port_allocations;

DROP INDEX idx_port_ranges_start_end;
DROP INDEX idx_port_ranges_is_active;
DROP TABLE port_ranges;
