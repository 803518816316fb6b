-- Reject secret values written under a retired or unknown data key (see minno/0004_field_key_guard).
-- depends: 0004_task_timing

SET LOCAL search_path = supervisor, public;

CREATE TRIGGER guard_secrets_field_keys
    BEFORE INSERT OR UPDATE ON secrets
    FOR EACH ROW EXECUTE FUNCTION minno.reject_retired_field_keys('encrypted_value');
