-- Undo slackbot/0003_maintenance.

SET LOCAL search_path = slackbot, public;

DROP FUNCTION archive_old_audit_logs(INTEGER);
DROP FUNCTION cleanup_expired_cache();
DROP FUNCTION cleanup_expired_sessions(INTEGER);
DROP INDEX idx_audit_logs_archive_created_at;
DROP TABLE audit_logs_archive;
