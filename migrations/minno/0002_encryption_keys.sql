-- The keyring (document 003, its migration 002: the encryption_keys table). It lives in the core
-- module because every module's encrypted columns may point at it; supervisor.secrets references
-- it as minno.encryption_keys(id).
--
-- The document gives a field list only. Choices made here:
-- * id UUID PRIMARY KEY DEFAULT gen_random_uuid() (built in; the document's uuid-ossp and
--   pgcrypto are not used: nothing is encrypted in SQL).
-- * key_name VARCHAR(255) NOT NULL, not empty, UNIQUE (constraint encryption_keys_key_name_key):
--   the application looks keys up by name.
-- * encrypted_key TEXT NOT NULL, not empty: the data-encryption key wrapped by the master key that
--   only the application holds (AES-256-GCM, base64 like minno's token columns). The plain key
--   never reaches the server.
-- * algorithm VARCHAR(50) NOT NULL DEFAULT 'aes-256-gcm', lower case and not empty (CHECK); the
--   set is left open so a later algorithm needs no migration.
-- * is_active BOOLEAN NOT NULL DEFAULT true. Several keys may be active (one per key_name /
--   purpose); a retired key stays, inactive, as long as a secret still references it
--   (supervisor.secrets' foreign key is ON DELETE RESTRICT).
-- * rotation_count INTEGER NOT NULL DEFAULT 0 CHECK (>= 0) and last_rotated_at TIMESTAMPTZ NULL:
--   a rotation re-wraps encrypted_key under a new master key (the wrapped data key stays the
--   same, so existing ciphertexts stay readable); last_rotated_at is NULL until the first one.
-- * created_at / updated_at TIMESTAMPTZ NOT NULL DEFAULT now() (document 003 uses time zones,
--   unlike document 000's TIMESTAMP columns in minno/0001).
-- Index: idx_encryption_keys_is_active (the document's "Indexes: is_active").
-- Trigger: update_encryption_keys_updated_at, calling this schema's update_updated_at_column()
-- that minno/0001_core created.
-- depends: 0001_core

SET LOCAL search_path = minno, public;

CREATE TABLE encryption_keys (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    key_name        VARCHAR(255) NOT NULL CHECK (key_name <> ''),
    encrypted_key   TEXT NOT NULL CHECK (encrypted_key <> ''),
    algorithm       VARCHAR(50) NOT NULL DEFAULT 'aes-256-gcm'
                    CHECK (algorithm <> '' AND algorithm = lower(algorithm)),
    is_active       BOOLEAN NOT NULL DEFAULT true,
    rotation_count  INTEGER NOT NULL DEFAULT 0 CHECK (rotation_count >= 0),
    last_rotated_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT encryption_keys_key_name_key UNIQUE (key_name)
);

CREATE INDEX idx_encryption_keys_is_active ON encryption_keys (is_active);

CREATE TRIGGER update_encryption_keys_updated_at
    BEFORE UPDATE ON encryption_keys
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
