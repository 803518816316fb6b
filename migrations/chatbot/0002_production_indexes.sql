-- The document's "Additional indexes for production" (001): GIN indexes on both metadata
-- columns (jsonb_ops, for @>, ? and ?| / ?& queries) and a GIN full-text index on
-- to_tsvector('english', content). The full-text index serves queries written with that same
-- expression, e.g. to_tsvector('english', content) @@ plainto_tsquery('english', 'order');
-- the document's ILIKE '%order%' search does not use it.
-- Transactional: the module's tables are created empty by 0001 in the same run, so plain
-- CREATE INDEX is instant here and CONCURRENTLY would buy nothing.
-- depends: 0001_conversations

SET LOCAL search_path = chatbot, public;

CREATE INDEX idx_conversations_metadata ON conversations USING gin (metadata);
CREATE INDEX idx_messages_metadata ON messages USING gin (metadata);
CREATE INDEX idx_messages_content_search ON messages USING gin (to_tsvector('english', content));
