-- assistant: user_tokens, the per-user Google and Slack OAuth tokens (document 002, its
-- migration 003_create_user_tokens_table.sql).
--
-- Columns, types, defaults and index names as documented.
-- Choices:
-- * The tokens are stored "with encryption support": google_/slack_access_token and
--   google_/slack_refresh_token keep the documented names and TEXT type and hold ciphertext
--   produced by the application (minnoctl.crypto, AES-256-GCM). Nothing is encrypted in SQL,
--   no pgcrypto.
-- * Fix of the document: its DDL (given twice) says google_access_token TEXT NOT NULL, but its own
--   storeUserTokens() passes googleTokens?.access_token and getUserTokens() treats a missing
--   Google token as possible, so a Slack-only user would be rejected. The code wins: the column
--   is nullable, and CHECK user_tokens_some_access_token keeps a row from holding no token at all.
-- * The document's updated_at has no trigger; it gets update_user_tokens_updated_at
--   (BEFORE UPDATE, update_updated_at_column() from 0001). It also fires for the
--   INSERT ... ON CONFLICT DO UPDATE upsert, giving the value the code sets.
-- * No foreign key to sessions: user_id is the application's user identifier, the document
--   links user_tokens to no table.
-- depends: 0002_oauth_tokens

SET LOCAL search_path = assistant, public;

CREATE TABLE user_tokens (
    user_id VARCHAR(255) PRIMARY KEY,
    google_access_token TEXT,
    google_refresh_token TEXT,
    google_expires_at TIMESTAMP,
    google_token_type VARCHAR(50) DEFAULT 'Bearer',
    google_scope TEXT,
    slack_access_token TEXT,
    slack_refresh_token TEXT,
    slack_expires_at TIMESTAMP,
    slack_scope TEXT,
    slack_team_id VARCHAR(255),
    slack_user_id VARCHAR(255),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT user_tokens_some_access_token
        CHECK (google_access_token IS NOT NULL OR slack_access_token IS NOT NULL)
);

CREATE INDEX idx_user_tokens_google_expires ON user_tokens (google_expires_at);
CREATE INDEX idx_user_tokens_slack_expires ON user_tokens (slack_expires_at);
CREATE INDEX idx_user_tokens_slack_team ON user_tokens (slack_team_id);

CREATE TRIGGER update_user_tokens_updated_at
    BEFORE UPDATE ON user_tokens
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
