-- assistant: sessions and confirmations (AI Assistant Platform, document 002), plus the
-- module's update_updated_at_column() trigger function.
--
-- Tables, columns, types, defaults, keys and index names are those of the document's DDL.
-- Choices and fixes:
-- * FIX: the document's updateSession() code always sets `updated_at = CURRENT_TIMESTAMP` on
--   sessions, but its CREATE TABLE sessions has no updated_at column (every such UPDATE would
--   fail). sessions gets `updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP`, like the other
--   tables, and the BEFORE UPDATE trigger update_sessions_updated_at.
-- * The document's updated_at columns carry no trigger; each table with updated_at
--   (sessions here, oauth_tokens and user_tokens in 0002/0003) gets a BEFORE UPDATE trigger
--   update_<table>_updated_at calling update_updated_at_column(), which keeps updated_at
--   current even for updates that do not set it (the document's code sets it explicitly;
--   the trigger gives the same value).
-- * Timestamps stay TIMESTAMP (without time zone) and confirmations.id stays SERIAL, as
--   documented; CURRENT_TIMESTAMP is stored in the session's time zone (use UTC).
-- * Tables are created with plain CREATE (not IF NOT EXISTS): a migration must fail loudly.
--   sessions is created before the tables whose foreign keys reference it (the document
--   lists oauth_tokens first, which would fail).
-- * confirmations.status stays VARCHAR(50) DEFAULT 'pending' with no CHECK: the document
--   names only 'pending' and its resolveConfirmation() stores any caller-given status (the
--   cleanup job's 'expired' included), so a closed list would be invented and could reject
--   the application's values.
-- * confirmations.session_id references sessions ON DELETE CASCADE as documented;
--   sessions.user_id and confirmations.user_id are plain identifiers (no foreign key: the
--   document gives none, and sessions may exist before a user_tokens row).
-- * The document's own `migrations` bookkeeping table is not created: yoyo records
--   migrations for minnoctl.
-- depends: 0006_key_row_share_lock

SET LOCAL search_path = assistant, public;
CREATE SCHEMA IF NOT EXISTS assistant;

CREATE FUNCTION update_updated_at_column() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = assistant, public
AS $$
BEGIN
    NEW.updated_at = CURRENT_TIMESTAMP;
    RETURN NEW;
END;
$$;

CREATE TABLE sessions (
    session_id VARCHAR(255) PRIMARY KEY,
    user_id VARCHAR(255),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    expires_at TIMESTAMP NOT NULL,
    last_activity TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    conversation_history JSONB DEFAULT '[]',
    tool_calls JSONB DEFAULT '[]',
    tool_results JSONB DEFAULT '[]',
    slack_context JSONB,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE INDEX idx_sessions_user_id ON sessions (user_id);
CREATE INDEX idx_sessions_expires_at ON sessions (expires_at);
CREATE INDEX idx_sessions_last_activity ON sessions (last_activity);

CREATE TRIGGER update_sessions_updated_at
    BEFORE UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE TABLE confirmations (
    id SERIAL PRIMARY KEY,
    session_id VARCHAR(255) NOT NULL,
    user_id VARCHAR(255) NOT NULL,
    confirmation_type VARCHAR(100) NOT NULL,
    confirmation_data JSONB NOT NULL,
    status VARCHAR(50) DEFAULT 'pending',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    expires_at TIMESTAMP NOT NULL,
    resolved_at TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions (session_id) ON DELETE CASCADE
);

CREATE INDEX idx_confirmations_session_id ON confirmations (session_id);
CREATE INDEX idx_confirmations_user_id ON confirmations (user_id);
CREATE INDEX idx_confirmations_status ON confirmations (status);
CREATE INDEX idx_confirmations_expires_at ON confirmations (expires_at);
