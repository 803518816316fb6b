-- transactional: false
-- Undo chatbot/0004_cleanup_indexes.

SET search_path = chatbot, public;

DROP INDEX CONCURRENTLY IF EXISTS idx_messages_system_created_at;
DROP INDEX CONCURRENTLY IF EXISTS idx_conversations_updated_at;
