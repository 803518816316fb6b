-- Undo slackbot/0001_tables.

SET LOCAL search_path = slackbot, public;

DROP INDEX idx_audit_logs_event_data;
DROP INDEX idx_audit_logs_session_id;
DROP INDEX idx_audit_logs_slack_user_id;
DROP INDEX idx_audit_logs_event_category;
DROP INDEX idx_audit_logs_event_type;
DROP INDEX idx_audit_logs_created_at;
DROP TABLE audit_logs;

DROP INDEX idx_query_cache_created_at;
DROP INDEX idx_query_cache_expires_at;
DROP TABLE query_cache;

DROP TRIGGER update_user_mappings_updated_at ON user_mappings;
DROP INDEX idx_user_mappings_database_username;
DROP INDEX idx_user_mappings_slack_user_id;
DROP TABLE user_mappings;

DROP INDEX idx_query_history_snowflake_query_id;
DROP INDEX idx_query_history_status;
DROP INDEX idx_query_history_created_at;
DROP INDEX idx_query_history_session_id;
DROP TABLE query_history;

DROP TRIGGER update_user_sessions_updated_at ON user_sessions;
DROP INDEX idx_user_sessions_last_activity;
DROP INDEX idx_user_sessions_team_user;
DROP INDEX idx_user_sessions_user_channel_active;
DROP TABLE user_sessions;

DROP FUNCTION update_updated_at_column();

-- Last, the schema 0001 created, as minnoctl's own rollback of a module's last migration
-- does: without CASCADE, so it fails (and the whole rollback with it) while objects that
-- these migrations did not create remain in it.
DROP SCHEMA IF EXISTS slackbot;
