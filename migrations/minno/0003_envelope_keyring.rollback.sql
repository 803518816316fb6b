-- Undo 0003_envelope_keyring.sql.

SET LOCAL search_path = minno, public;

DROP TABLE key_audit_log;
DROP TRIGGER sync_encryption_keys_is_active ON encryption_keys;
DROP FUNCTION sync_encryption_key_is_active();
DROP INDEX idx_encryption_keys_one_active;
ALTER TABLE encryption_keys DROP CONSTRAINT encryption_keys_destroyed_when_retired;
UPDATE encryption_keys SET encrypted_key = 'destroyed' WHERE encrypted_key IS NULL;
ALTER TABLE encryption_keys ALTER COLUMN encrypted_key SET NOT NULL;
ALTER TABLE encryption_keys DROP CONSTRAINT encryption_keys_key_number_key;
ALTER TABLE encryption_keys
    DROP COLUMN retired_at,
    DROP COLUMN activated_at,
    DROP COLUMN kek_fingerprint,
    DROP COLUMN status,
    DROP COLUMN key_number;
