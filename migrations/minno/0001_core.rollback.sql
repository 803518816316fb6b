-- Undo minno/0001_core: drop the view, triggers, indexes, tables and the trigger function, in
-- reverse order of creation. The unique indexes named idx_workspaces_slack_team_id,
-- idx_oauth_tokens_workspace_provider and idx_minno_sessions_slack_thread belong to UNIQUE
-- constraints and go with their tables.

SET LOCAL search_path = minno, public;

DROP VIEW active_sessions_view;

DROP TRIGGER update_minno_sessions_updated_at ON minno_sessions;
DROP TRIGGER update_oauth_tokens_updated_at ON oauth_tokens;
DROP TRIGGER update_workspaces_updated_at ON workspaces;

DROP INDEX idx_conversation_messages_slack_ts;
DROP INDEX idx_conversation_messages_session_timestamp;
DROP TABLE conversation_messages;

DROP INDEX idx_minno_sessions_created_at;
DROP INDEX idx_minno_sessions_notion_task;
DROP INDEX idx_minno_sessions_notion_project;
DROP INDEX idx_minno_sessions_workspace_status;
DROP TABLE minno_sessions;

DROP INDEX idx_oauth_tokens_provider;
DROP TABLE oauth_tokens;

DROP TABLE workspaces;

DROP FUNCTION update_updated_at_column();

-- Last, the schema 0001 created, as minnoctl's own rollback of a module's last migration
-- does: without CASCADE, so it fails (and the whole rollback with it) while objects that
-- these migrations did not create remain in it.
DROP SCHEMA IF EXISTS minno;
