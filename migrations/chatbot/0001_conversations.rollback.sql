-- Undo chatbot/0001_conversations: drop the trigger, indexes, tables and the trigger function,
-- in reverse order of creation.

SET LOCAL search_path = chatbot, public;

DROP TRIGGER update_conversations_updated_at ON conversations;

DROP INDEX idx_messages_role;
DROP INDEX idx_messages_conversation_id;
DROP TABLE messages;

DROP INDEX idx_conversations_created_at;
DROP INDEX idx_conversations_user_id;
DROP TABLE conversations;

DROP FUNCTION update_updated_at_column();

-- Last, the schema 0001 created, as minnoctl's own rollback of a module's last migration
-- does: without CASCADE, so it fails (and the whole rollback with it) while objects that
-- these migrations did not create remain in it.
DROP SCHEMA IF EXISTS chatbot;
