-- Undo assistant/0001_sessions.

SET LOCAL search_path = assistant, public;

DROP INDEX idx_confirmations_expires_at;
DROP INDEX idx_confirmations_status;
DROP INDEX idx_confirmations_user_id;
DROP INDEX idx_confirmations_session_id;
DROP TABLE confirmations;

DROP TRIGGER update_sessions_updated_at ON sessions;
DROP INDEX idx_sessions_last_activity;
DROP INDEX idx_sessions_expires_at;
DROP INDEX idx_sessions_user_id;
DROP TABLE sessions;

DROP FUNCTION update_updated_at_column();

-- Last, the schema 0001 created, as minnoctl's own rollback of a module's last migration
-- does: without CASCADE, so it fails (and the whole rollback with it) while objects that
-- these migrations did not create remain in it.
DROP SCHEMA IF EXISTS assistant;
