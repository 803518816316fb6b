-- The keyring for envelope encryption (minnoctl.crypto), on spec 003's encryption_keys.
--
-- Every encrypted column of every module uses this one keyring. A row is a data key (DEK), stored
-- wrapped by the master key (KEK) with AES-256-GCM; the KEK never reaches the server.
-- * key_number: the 4-byte id written in every encrypted field's header (the spec's id is a UUID,
--   too long for a header). An identity, never reused.
-- * status: pending (made, not yet used) -> active (encrypts; at most one) -> decrypt_only (an old
--   key during a rotation) -> retired (no field uses it; its wrapped key is destroyed, so
--   encrypted_key becomes NULL). is_active, the spec's flag, is kept equal to status = 'active'.
-- * kek_fingerprint: an HMAC-based name of the master key that wrapped it (never the key).
-- * key_audit_log: every step of a rotation, retirement or re-wrap: who, when, key numbers and
--   counts; never key material.
-- depends: 0002_encryption_keys

SET LOCAL search_path = minno, public;

ALTER TABLE encryption_keys
    ADD COLUMN key_number INTEGER GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'active', 'decrypt_only', 'retired')),
    ADD COLUMN kek_fingerprint CHAR(16),
    ADD COLUMN activated_at TIMESTAMPTZ,
    ADD COLUMN retired_at TIMESTAMPTZ;

ALTER TABLE encryption_keys ADD CONSTRAINT encryption_keys_key_number_key UNIQUE (key_number);

ALTER TABLE encryption_keys ALTER COLUMN encrypted_key DROP NOT NULL;

ALTER TABLE encryption_keys ADD CONSTRAINT encryption_keys_destroyed_when_retired
    CHECK ((status = 'retired') = (encrypted_key IS NULL));

CREATE UNIQUE INDEX idx_encryption_keys_one_active ON encryption_keys ((true)) WHERE status = 'active';

CREATE FUNCTION sync_encryption_key_is_active() RETURNS trigger
    LANGUAGE plpgsql SET search_path = minno, public AS $$
BEGIN
    NEW.is_active := NEW.status = 'active';
    RETURN NEW;
END;
$$;

CREATE TRIGGER sync_encryption_keys_is_active
    BEFORE INSERT OR UPDATE ON encryption_keys
    FOR EACH ROW EXECUTE FUNCTION sync_encryption_key_is_active();

CREATE TABLE key_audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor       VARCHAR(255) NOT NULL,
    host        VARCHAR(255) NOT NULL,
    action      VARCHAR(50) NOT NULL,
    key_numbers INTEGER[] NOT NULL DEFAULT '{}',
    details     JSONB NOT NULL DEFAULT '{}'
);

CREATE INDEX idx_key_audit_log_at ON key_audit_log (at);
