-- Minno core schema (document 000): workspaces, oauth_tokens, minno_sessions,
-- conversation_messages, their indexes, the updated_at triggers and active_sessions_view.
--
-- The document gives field lists, not DDL. Choices made here:
-- * Every id is UUID DEFAULT gen_random_uuid() (built in; no uuid-ossp / pgcrypto).
-- * The document's TIMESTAMP columns stay TIMESTAMP (created_at, updated_at, expires_at,
--   conversation_messages."timestamp"), the type it names; like the other modules, values are
--   written in UTC (the server's default TimeZone for minnoctl's sessions is not relied on).
--   created_at / updated_at / timestamp are NOT NULL DEFAULT now().
-- * Identifiers from Slack and Notion are VARCHAR(255); Slack timestamps ("1698765432.123456")
--   are VARCHAR(64) and kept as text, never as numbers, so no digit is lost.
-- * NOT NULL everywhere except the columns the document marks NULL (notion_workspace_id,
--   refresh_token_encrypted, expires_at, notion_project_id, notion_task_id, slack_message_ts).
-- * scopes TEXT[] NOT NULL DEFAULT '{}'; metadata / context JSONB NOT NULL DEFAULT '{}'.
-- * oauth_tokens.provider VARCHAR(50), lower case and not empty (CHECK); the set of providers
--   is open ("slack, notion, google, etc."), so there is no list.
-- * minno_sessions.status VARCHAR(20) NOT NULL DEFAULT 'active',
--   CHECK IN ('active', 'completed', 'failed', 'archived') (the four values the document lists).
-- * conversation_messages.role VARCHAR(20) NOT NULL,
--   CHECK IN ('user', 'assistant', 'tool', 'system') (the four values the document lists).
-- * Token columns hold the application's AES-256-GCM ciphertext (base64); nothing is
--   encrypted in SQL, although the document suggests pgcrypto.
-- * All three foreign keys are ON DELETE CASCADE, as documented.
-- Indexes:
-- * The document's three UNIQUE constraints and three of its named indexes cover the same
--   columns (slack_team_id; workspace_id + provider; slack_channel_id + slack_thread_ts). Each
--   UNIQUE constraint is named after the documented index, so idx_workspaces_slack_team_id,
--   idx_oauth_tokens_workspace_provider and idx_minno_sessions_slack_thread are the unique
--   indexes themselves and no column set is indexed twice.
-- * idx_minno_sessions_workspace_status is (workspace_id, status, updated_at DESC): it still
--   serves workspace + status filters and also the documented ORDER BY updated_at DESC.
-- * idx_minno_sessions_notion_project / _notion_task and idx_conversation_messages_slack_ts
--   are partial (WHERE ... IS NOT NULL), as documented.
-- Triggers: the document has three updated_at triggers without names; they are
-- update_<table>_updated_at, all calling this schema's update_updated_at_column().
-- View: the document only names active_sessions_view ("for convenient querying"). It lists the
-- sessions with status 'active', with their workspace's Slack team id and name, the number of
-- messages and the time of the last message (NULL when there is none).

SET LOCAL search_path = minno, public;
CREATE SCHEMA IF NOT EXISTS minno;

CREATE FUNCTION update_updated_at_column()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = minno, public
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE workspaces (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    slack_team_id       VARCHAR(255) NOT NULL,
    slack_team_name     VARCHAR(255) NOT NULL,
    notion_workspace_id VARCHAR(255),
    created_at          TIMESTAMP NOT NULL DEFAULT now(),
    updated_at          TIMESTAMP NOT NULL DEFAULT now(),
    CONSTRAINT idx_workspaces_slack_team_id UNIQUE (slack_team_id)
);

CREATE TABLE oauth_tokens (
    id                      UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id            UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    provider                VARCHAR(50) NOT NULL
                            CHECK (provider <> '' AND provider = lower(provider)),
    access_token_encrypted  TEXT NOT NULL,
    refresh_token_encrypted TEXT,
    expires_at              TIMESTAMP,
    scopes                  TEXT[] NOT NULL DEFAULT '{}',
    metadata                JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at              TIMESTAMP NOT NULL DEFAULT now(),
    updated_at              TIMESTAMP NOT NULL DEFAULT now(),
    CONSTRAINT idx_oauth_tokens_workspace_provider UNIQUE (workspace_id, provider)
);

CREATE INDEX idx_oauth_tokens_provider ON oauth_tokens (provider);

CREATE TABLE minno_sessions (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id      UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    slack_channel_id  VARCHAR(255) NOT NULL,
    slack_thread_ts   VARCHAR(64) NOT NULL,
    notion_project_id VARCHAR(255),
    notion_task_id    VARCHAR(255),
    context           JSONB NOT NULL DEFAULT '{}'::jsonb,
    status            VARCHAR(20) NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'completed', 'failed', 'archived')),
    created_at        TIMESTAMP NOT NULL DEFAULT now(),
    updated_at        TIMESTAMP NOT NULL DEFAULT now(),
    CONSTRAINT idx_minno_sessions_slack_thread UNIQUE (slack_channel_id, slack_thread_ts)
);

CREATE INDEX idx_minno_sessions_workspace_status
    ON minno_sessions (workspace_id, status, updated_at DESC);
CREATE INDEX idx_minno_sessions_notion_project
    ON minno_sessions (notion_project_id) WHERE notion_project_id IS NOT NULL;
CREATE INDEX idx_minno_sessions_notion_task
    ON minno_sessions (notion_task_id) WHERE notion_task_id IS NOT NULL;
CREATE INDEX idx_minno_sessions_created_at
    ON minno_sessions (created_at DESC);

CREATE TABLE conversation_messages (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id       UUID NOT NULL REFERENCES minno_sessions (id) ON DELETE CASCADE,
    role             VARCHAR(20) NOT NULL
                     CHECK (role IN ('user', 'assistant', 'tool', 'system')),
    content          TEXT NOT NULL,
    metadata         JSONB NOT NULL DEFAULT '{}'::jsonb,
    "timestamp"      TIMESTAMP NOT NULL DEFAULT now(),
    slack_message_ts VARCHAR(64)
);

CREATE INDEX idx_conversation_messages_session_timestamp
    ON conversation_messages (session_id, "timestamp");
CREATE INDEX idx_conversation_messages_slack_ts
    ON conversation_messages (slack_message_ts) WHERE slack_message_ts IS NOT NULL;

CREATE TRIGGER update_workspaces_updated_at
    BEFORE UPDATE ON workspaces
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_oauth_tokens_updated_at
    BEFORE UPDATE ON oauth_tokens
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_minno_sessions_updated_at
    BEFORE UPDATE ON minno_sessions
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE VIEW active_sessions_view AS
SELECT
    s.id                AS session_id,
    s.workspace_id,
    w.slack_team_id,
    w.slack_team_name,
    s.slack_channel_id,
    s.slack_thread_ts,
    s.notion_project_id,
    s.notion_task_id,
    s.context,
    s.status,
    s.created_at,
    s.updated_at,
    m.message_count,
    m.last_message_at
FROM minno_sessions AS s
JOIN workspaces AS w ON w.id = s.workspace_id
CROSS JOIN LATERAL (
    SELECT count(*)           AS message_count,
           max(cm."timestamp") AS last_message_at
    FROM conversation_messages AS cm
    WHERE cm.session_id = s.id
) AS m
WHERE s.status = 'active';
