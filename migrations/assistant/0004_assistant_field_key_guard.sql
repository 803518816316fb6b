-- Reject token fields written under a retired or unknown data key (see minno/0004_field_key_guard):
-- the writer gets SQLSTATE MK001, reloads its keyring and writes again, instead of storing a
-- field nothing can decrypt.
-- depends: 0003_user_tokens

SET LOCAL search_path = assistant, public;

CREATE TRIGGER guard_user_tokens_field_keys
    BEFORE INSERT OR UPDATE ON user_tokens
    FOR EACH ROW EXECUTE FUNCTION minno.reject_retired_field_keys(
        'google_access_token', 'google_refresh_token', 'slack_access_token', 'slack_refresh_token');

CREATE TRIGGER guard_oauth_tokens_field_keys
    BEFORE INSERT OR UPDATE ON oauth_tokens
    FOR EACH ROW EXECUTE FUNCTION minno.reject_retired_field_keys('access_token', 'refresh_token');
