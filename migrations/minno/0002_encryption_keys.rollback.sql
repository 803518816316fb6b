-- Undo minno/0002_encryption_keys: drop the trigger, the index and the table, in reverse order
-- of creation (the unique index encryption_keys_key_name_key goes with its table). Fails, as it
-- should, while supervisor.secrets still references the table: roll supervisor back first.

SET LOCAL search_path = minno, public;

DROP TRIGGER update_encryption_keys_updated_at ON encryption_keys;
DROP INDEX idx_encryption_keys_is_active;
DROP TABLE encryption_keys;
