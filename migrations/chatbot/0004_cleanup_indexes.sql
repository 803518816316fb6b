-- transactional: false
-- Indexes for `minnoctl cleanup`'s retention batches, built CONCURRENTLY so that adding them to a
-- live database does not block writers (hence not transactional; each DROP ... IF EXISTS makes a
-- rerun after a crash part-way through safe, an interrupted CONCURRENTLY build leaves an INVALID
-- index behind).
-- * idx_conversations_updated_at (updated_at, id): inactive conversations, oldest first, walked
--   by key so no batch rescans what earlier batches removed.
-- * idx_messages_system_created_at (created_at, id) WHERE role = 'system': old system messages.
-- depends: 0003_archive

SET search_path = chatbot, public;

DROP INDEX CONCURRENTLY IF EXISTS idx_conversations_updated_at;
CREATE INDEX CONCURRENTLY idx_conversations_updated_at ON conversations (updated_at, id);

DROP INDEX CONCURRENTLY IF EXISTS idx_messages_system_created_at;
CREATE INDEX CONCURRENTLY idx_messages_system_created_at ON messages (created_at, id) WHERE role = 'system';
