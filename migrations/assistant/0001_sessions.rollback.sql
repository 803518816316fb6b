-- Undo assistant/0001_sessions.

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
