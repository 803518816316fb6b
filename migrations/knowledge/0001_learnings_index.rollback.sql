-- Undo knowledge/0001_learnings_index: drop the views, triggers, functions, indexes, tables and
-- the trigger function, in reverse order of creation. The unique constraint
-- knowledge_chunks_source_id_chunk_index_key goes with its table. The vector extension is
-- minnoctl's, not this file's: it stays.

SET LOCAL search_path = knowledge, public;

DROP VIEW popular_search_queries;
DROP VIEW knowledge_coverage_by_project;
DROP VIEW learning_effectiveness;

DROP TRIGGER update_learnings_updated_at ON learnings;
DROP TRIGGER update_knowledge_chunks_updated_at ON knowledge_chunks;
DROP TRIGGER update_knowledge_sources_updated_at ON knowledge_sources;

DROP TRIGGER track_learning_usage ON learning_applications;
DROP FUNCTION track_learning_application();
DROP FUNCTION increment_learning_usage(UUID);
DROP FUNCTION find_similar_learnings(vector, UUID, DOUBLE PRECISION, INTEGER);
DROP FUNCTION search_learnings(vector, UUID, VARCHAR, INTEGER, DOUBLE PRECISION);
DROP FUNCTION search_knowledge_chunks(vector, UUID, INTEGER, DOUBLE PRECISION);

DROP TRIGGER propagate_knowledge_source_project_id ON knowledge_sources;
DROP FUNCTION propagate_source_project_id();
DROP TRIGGER set_knowledge_chunk_project_id ON knowledge_chunks;
DROP FUNCTION knowledge_chunk_project_id();

DROP INDEX idx_search_queries_user_feedback;
DROP INDEX idx_search_queries_created_at;
DROP INDEX idx_search_queries_project_id;
DROP TABLE search_queries;

DROP INDEX idx_learning_applications_outcome;
DROP INDEX idx_learning_applications_learning_id;
DROP TABLE learning_applications;

DROP INDEX idx_learnings_embedding;
DROP INDEX idx_learnings_verified;
DROP INDEX idx_learnings_tags;
DROP INDEX idx_learnings_impact_level;
DROP INDEX idx_learnings_confidence_score;
DROP INDEX idx_learnings_category;
DROP INDEX idx_learnings_learning_type;
DROP INDEX idx_learnings_project_id;
DROP TABLE learnings;

DROP INDEX idx_knowledge_chunks_embedding;
DROP INDEX idx_knowledge_chunks_content_hash;
DROP INDEX idx_knowledge_chunks_project_id;
DROP INDEX idx_knowledge_chunks_source_id;
DROP TABLE knowledge_chunks;

DROP INDEX idx_knowledge_sources_source_id;
DROP INDEX idx_knowledge_sources_source_type;
DROP INDEX idx_knowledge_sources_project_id;
DROP TABLE knowledge_sources;

DROP FUNCTION update_updated_at_column();

-- Last, the schema 0001 created, as minnoctl's own rollback of a module's last migration
-- does: without CASCADE, so it fails (and the whole rollback with it) while objects that
-- these migrations did not create remain in it.
DROP SCHEMA IF EXISTS knowledge;
