-- Undo assistant/0002_oauth_tokens.

SET LOCAL search_path = assistant, public;

DROP TRIGGER update_oauth_tokens_updated_at ON oauth_tokens;
DROP TABLE oauth_tokens;
