-- slackbot: the five core tables of the Slackbot application (document 004): user_sessions,
-- query_history, user_mappings, query_cache and audit_logs, their indexes, the module's
-- update_updated_at_column() trigger function and the updated_at triggers.
--
-- The document gives no DDL, only usage examples (db_ops.create_user_session(),
-- log_query_execution(), update_query_result(), cache_query_result(), get_cached_result(),
-- log_audit_event(), the views and the maintenance functions). Every column those examples
-- pass or read is here under the name they use; the remaining columns, all types,
-- constraints and index names are choices, listed here:
-- * Keys: every table has `id UUID PRIMARY KEY DEFAULT gen_random_uuid()` (the examples read
--   session.id and query_log.id and pass them back as session_id / query_id).
-- * Time: every timestamp is TIMESTAMPTZ (the application compares created_at, expires_at
--   and last_activity with NOW() across hosts; pass time-zone-aware datetimes).
--   created_at is NOT NULL DEFAULT now() everywhere.
-- * Slack identifiers (slack_user_id, slack_channel_id, slack_team_id; "U123456789",
--   "C123456789", "T123456789", also "TEST_USER") are VARCHAR(64): Slack IDs are short
--   opaque strings whose length Slack does not fix. Warehouse names (current_database,
--   database_name, default_database, database_username, database_role) are VARCHAR(255),
--   Snowflake's identifier limit.
-- * JSON payloads are JSONB: user_sessions.session_context and preferences (NOT NULL DEFAULT
--   '{}'; the document's own migration example adds preferences as JSONB DEFAULT '{}', and
--   create_user_session() already passes it, so it is part of the base table),
--   query_history.query_result, query_cache.result_data (NOT NULL), audit_logs.event_data
--   (NOT NULL DEFAULT '{}'), user_mappings.permissions (NOT NULL DEFAULT '{}').
-- * user_sessions: is_active BOOLEAN NOT NULL DEFAULT TRUE (the document's test asserts a new
--   session is active); last_activity NOT NULL DEFAULT now() (update_session_activity();
--   cleanup_expired_sessions() and the views read it); session_context holds the rest of the
--   conversation state (current schema, warehouse, ...), only current_database is a column
--   because the document passes it by name. No UNIQUE on (user, channel): a user may have
--   several sessions over time; get_active_session(user, channel) takes the newest active one
--   (partial index idx_user_sessions_user_channel_active).
-- * query_history: session_id UUID NOT NULL REFERENCES user_sessions(id) ON DELETE CASCADE
--   (a query log belongs to its session; the maintenance functions never delete sessions,
--   they only deactivate them, so history is kept). original_question TEXT NOT NULL;
--   generated_query TEXT NULL (a question whose SQL generation failed is still logged, with
--   status 'error'). status VARCHAR(20) NOT NULL DEFAULT 'pending' with
--   CHECK (status IN ('pending','running','success','error','timeout','cancelled')): the
--   document shows 'success' and the views count successes and failures, so the set is
--   closed here; 'error' and 'timeout' count as failures (DB_QUERY_TIMEOUT exists).
--   execution_time_ms INTEGER and row_count BIGINT, both CHECK (>= 0);
--   snowflake_query_id VARCHAR(100) (Snowflake's query ids are UUID-shaped strings but are
--   not guaranteed UUIDs, so not the uuid type); error_message TEXT; completed_at
--   TIMESTAMPTZ, set by update_query_result().
-- * user_mappings ("maps Slack users to database users and permissions"): UNIQUE
--   (slack_team_id, slack_user_id) (Slack user ids are only guaranteed unique within a
--   workspace); slack_username, slack_display_name, slack_email for the views' "user info";
--   database_username, database_role, default_database for the warehouse identity (no
--   credentials are stored: the document says sessions never hold credentials, and the same
--   holds here); permissions JSONB; is_admin and is_active BOOLEAN NOT NULL.
-- * query_cache: query_hash VARCHAR(128) NOT NULL UNIQUE (a hex SHA-256/512 digest; the
--   unique index serves get_cached_result(), re-caching uses ON CONFLICT (query_hash));
--   original_query and normalized_query TEXT NOT NULL; database_name for the cache key's
--   context; expires_at TIMESTAMPTZ NOT NULL (the TTL; cache_ttl_seconds defaults to 3600 in
--   the application); hit_count INTEGER NOT NULL DEFAULT 0 CHECK (>= 0) and last_hit_at for
--   the hit rate; is_valid BOOLEAN NOT NULL DEFAULT TRUE, invalidated_at and
--   invalidation_reason for the documented invalidation.
-- * audit_logs: event_type VARCHAR(100) NOT NULL, event_category VARCHAR(50) NOT NULL (no
--   closed list: the document names only 'user_login' / 'security' and the application logs
--   its own kinds of events; both must be non-empty), event_description TEXT NOT NULL,
--   event_data JSONB; slack_user_id / slack_team_id / slack_channel_id and session_id are
--   optional context. session_id has NO foreign key: audit records outlive the sessions they
--   mention and are moved to audit_logs_archive (0003), which must not be blocked by, nor
--   rewrite, history.
-- * updated_at: user_sessions and user_mappings are updated in place (session activity,
--   profile/permission changes) and get updated_at NOT NULL DEFAULT now() with the BEFORE
--   UPDATE triggers update_user_sessions_updated_at and update_user_mappings_updated_at.
--   query_history (completed once), query_cache (hit counters) and audit_logs (append-only)
--   have no updated_at.
-- * Indexes: the document names none ("use appropriate indexes (already defined in
--   schema)"); these follow the documented access paths: active session lookup by user and
--   channel, idle-session cleanup, the views' joins and time buckets, the cache's expiry
--   sweep, audit searches by time, type, category, user and session, and a jsonb_path_ops GIN
--   index on audit_logs.event_data ("monitor audit logs for suspicious activity", e.g.
--   event_data @> '{"ip_address": "192.168.1.1"}').
-- * The document's migrations.py bookkeeping is not created: yoyo records migrations for
--   minnoctl.
-- depends: 0006_key_row_share_lock

SET LOCAL search_path = slackbot, public;
CREATE SCHEMA IF NOT EXISTS slackbot;

CREATE FUNCTION update_updated_at_column() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = slackbot, public
AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

CREATE TABLE user_sessions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    slack_user_id VARCHAR(64) NOT NULL,
    slack_channel_id VARCHAR(64) NOT NULL,
    slack_team_id VARCHAR(64) NOT NULL,
    current_database VARCHAR(255),
    session_context JSONB NOT NULL DEFAULT '{}',
    preferences JSONB NOT NULL DEFAULT '{}',
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    last_activity TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_user_sessions_user_channel_active
    ON user_sessions (slack_user_id, slack_channel_id, last_activity DESC) WHERE is_active;
CREATE INDEX idx_user_sessions_team_user ON user_sessions (slack_team_id, slack_user_id);
CREATE INDEX idx_user_sessions_last_activity ON user_sessions (last_activity) WHERE is_active;

CREATE TRIGGER update_user_sessions_updated_at
    BEFORE UPDATE ON user_sessions
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE TABLE query_history (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id UUID NOT NULL REFERENCES user_sessions (id) ON DELETE CASCADE,
    original_question TEXT NOT NULL,
    generated_query TEXT,
    database_name VARCHAR(255),
    status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'success', 'error', 'timeout', 'cancelled')),
    execution_time_ms INTEGER CHECK (execution_time_ms >= 0),
    row_count BIGINT CHECK (row_count >= 0),
    query_result JSONB,
    snowflake_query_id VARCHAR(100),
    error_message TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at TIMESTAMPTZ
);

CREATE INDEX idx_query_history_session_id ON query_history (session_id, created_at);
CREATE INDEX idx_query_history_created_at ON query_history (created_at);
CREATE INDEX idx_query_history_status ON query_history (status, created_at);
CREATE INDEX idx_query_history_snowflake_query_id
    ON query_history (snowflake_query_id) WHERE snowflake_query_id IS NOT NULL;

CREATE TABLE user_mappings (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    slack_user_id VARCHAR(64) NOT NULL,
    slack_team_id VARCHAR(64) NOT NULL,
    slack_username VARCHAR(255),
    slack_display_name VARCHAR(255),
    slack_email VARCHAR(320),
    database_username VARCHAR(255),
    database_role VARCHAR(255),
    default_database VARCHAR(255),
    permissions JSONB NOT NULL DEFAULT '{}',
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT user_mappings_slack_team_id_slack_user_id_key UNIQUE (slack_team_id, slack_user_id)
);

CREATE INDEX idx_user_mappings_slack_user_id ON user_mappings (slack_user_id);
CREATE INDEX idx_user_mappings_database_username ON user_mappings (database_username);

CREATE TRIGGER update_user_mappings_updated_at
    BEFORE UPDATE ON user_mappings
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE TABLE query_cache (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    query_hash VARCHAR(128) NOT NULL,
    original_query TEXT NOT NULL,
    normalized_query TEXT NOT NULL,
    database_name VARCHAR(255),
    result_data JSONB NOT NULL,
    hit_count INTEGER NOT NULL DEFAULT 0 CHECK (hit_count >= 0),
    last_hit_at TIMESTAMPTZ,
    is_valid BOOLEAN NOT NULL DEFAULT TRUE,
    invalidated_at TIMESTAMPTZ,
    invalidation_reason TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT query_cache_query_hash_key UNIQUE (query_hash)
);

CREATE INDEX idx_query_cache_expires_at ON query_cache (expires_at);
CREATE INDEX idx_query_cache_created_at ON query_cache (created_at);

CREATE TABLE audit_logs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    event_type VARCHAR(100) NOT NULL CHECK (event_type <> ''),
    event_category VARCHAR(50) NOT NULL CHECK (event_category <> ''),
    event_description TEXT NOT NULL,
    event_data JSONB NOT NULL DEFAULT '{}',
    slack_user_id VARCHAR(64),
    slack_team_id VARCHAR(64),
    slack_channel_id VARCHAR(64),
    session_id UUID,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_audit_logs_created_at ON audit_logs (created_at);
CREATE INDEX idx_audit_logs_event_type ON audit_logs (event_type, created_at);
CREATE INDEX idx_audit_logs_event_category ON audit_logs (event_category, created_at);
CREATE INDEX idx_audit_logs_slack_user_id
    ON audit_logs (slack_user_id, created_at) WHERE slack_user_id IS NOT NULL;
CREATE INDEX idx_audit_logs_session_id ON audit_logs (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX idx_audit_logs_event_data ON audit_logs USING GIN (event_data jsonb_path_ops);
