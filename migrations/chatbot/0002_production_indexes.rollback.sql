-- Undo chatbot/0002_production_indexes: drop the three GIN indexes, in reverse order.

SET LOCAL search_path = chatbot, public;

DROP INDEX idx_messages_content_search;
DROP INDEX idx_messages_metadata;
DROP INDEX idx_conversations_metadata;
