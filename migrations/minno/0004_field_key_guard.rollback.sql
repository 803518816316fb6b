SET LOCAL search_path = minno, public;

DROP TRIGGER guard_oauth_tokens_field_keys ON oauth_tokens;
DROP FUNCTION reject_retired_field_keys();
