-- Undo assistant/0003_user_tokens.

SET LOCAL search_path = assistant, public;

DROP TRIGGER update_user_tokens_updated_at ON user_tokens;
DROP INDEX idx_user_tokens_slack_team;
DROP INDEX idx_user_tokens_slack_expires;
DROP INDEX idx_user_tokens_google_expires;
DROP TABLE user_tokens;
