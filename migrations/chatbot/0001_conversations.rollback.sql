-- Undo chatbot/0001_conversations: drop the trigger, indexes, tables and the trigger function,
-- in reverse order of creation.

DROP TRIGGER update_conversations_updated_at ON conversations;

DROP INDEX idx_messages_role;
DROP INDEX idx_messages_conversation_id;
DROP TABLE messages;

DROP INDEX idx_conversations_created_at;
DROP INDEX idx_conversations_user_id;
DROP TABLE conversations;

DROP FUNCTION update_updated_at_column();
