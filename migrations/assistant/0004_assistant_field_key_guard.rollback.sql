SET LOCAL search_path = assistant, public;

DROP TRIGGER guard_oauth_tokens_field_keys ON oauth_tokens;
DROP TRIGGER guard_user_tokens_field_keys ON user_tokens;
