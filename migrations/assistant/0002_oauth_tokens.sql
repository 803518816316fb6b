-- assistant: the legacy oauth_tokens table (one OAuth token set per session; document 002).
--
-- Columns, types, defaults and keys as documented; session_id is both the primary key and a
-- foreign key to sessions ON DELETE CASCADE, so a session's tokens go with it.
-- Choices:
-- * The tokens are stored "with encryption support": access_token and refresh_token keep the
--   documented names and TEXT type and hold ciphertext produced by the application
--   (minnoctl.crypto, AES-256-GCM). Nothing is encrypted in SQL, no pgcrypto.
-- * The document's updated_at has no trigger; it gets update_oauth_tokens_updated_at
--   (BEFORE UPDATE, update_updated_at_column() from 0001).
-- * No index beyond the primary key: the document names none.
-- depends: 0001_sessions

SET LOCAL search_path = assistant, public;

CREATE TABLE oauth_tokens (
    session_id VARCHAR(255) PRIMARY KEY,
    access_token TEXT NOT NULL,
    refresh_token TEXT,
    expires_at TIMESTAMP NOT NULL,
    token_type VARCHAR(50) DEFAULT 'Bearer',
    scope TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions (session_id) ON DELETE CASCADE
);

CREATE TRIGGER update_oauth_tokens_updated_at
    BEFORE UPDATE ON oauth_tokens
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
