"""The keyring of document 003 (its migration 002's encryption_keys), kept in the core module:
migrations/minno/0002_encryption_keys.sql. Only the keyring is listed here; document 000's minno
objects are in tests/spec/minno.py.

The document names the indexed column (is_active), not the index: idx_encryption_keys_is_active.
Its updated_at trigger reuses minno's update_updated_at_column() from minno/0001_core.
"""

MODULE = "minno"

TABLES = {
    "encryption_keys": ["id", "key_name", "encrypted_key", "algorithm", "is_active", "rotation_count",
                        "last_rotated_at", "created_at", "updated_at",
                        # added by minno/0003_envelope_keyring for envelope encryption (the token issue)
                        "key_number", "status", "kek_fingerprint", "activated_at", "retired_at",
                        "write_fenced_at"],
    "key_audit_log": ["id", "at", "actor", "host", "action", "key_numbers", "details"],
}

INDEXES = [
    "idx_encryption_keys_is_active",
    "encryption_keys_key_name_key",
    "encryption_keys_key_number_key",
    "idx_encryption_keys_one_active",
    "idx_key_audit_log_at",
]

VIEWS = []

FUNCTIONS = ["sync_encryption_key_is_active", "reject_retired_field_keys"]

TRIGGERS = ["update_encryption_keys_updated_at", "sync_encryption_keys_is_active", "guard_oauth_tokens_field_keys"]

EXAMPLE_QUERIES = [
    "SELECT id, key_name, algorithm, is_active, rotation_count, last_rotated_at FROM encryption_keys "
    "WHERE is_active ORDER BY created_at",
    # a rotation re-wraps the data key: the application writes the new ciphertext
    """DO $$
DECLARE
    v_key encryption_keys;
BEGIN
    INSERT INTO encryption_keys (key_name, encrypted_key) VALUES ('supervisor-secrets', 'd3JhcHBlZC0x')
        RETURNING * INTO v_key;
    ASSERT v_key.algorithm = 'aes-256-gcm' AND v_key.rotation_count = 0 AND v_key.last_rotated_at IS NULL;
    UPDATE encryption_keys
       SET encrypted_key = 'd3JhcHBlZC0y', rotation_count = rotation_count + 1, last_rotated_at = now()
     WHERE id = v_key.id
    RETURNING * INTO v_key;
    ASSERT v_key.rotation_count = 1 AND v_key.last_rotated_at IS NOT NULL;
END
$$""",
]
