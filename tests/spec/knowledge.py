"""supervisor-service (document 003, its migration 005, the learnings index with pgvector):
migrations/knowledge/0001_learnings_index.sql. Only on servers with pgvector.

The document lists indexed columns without index names; the names below are the ones the
migration chose (idx_<table>_<column>). Triggers have no names in the document either:
update_<table>_updated_at, track_learning_usage, set_knowledge_chunk_project_id and
propagate_knowledge_source_project_id are the migration's.
"""

MODULE = "knowledge"

TABLES = {
    "knowledge_sources": ["id", "project_id", "source_type", "source_id", "title", "url", "file_path", "author",
                          "metadata", "created_at", "updated_at", "indexed_at"],
    "knowledge_chunks": ["id", "source_id", "project_id", "chunk_index", "content", "content_hash", "embedding",
                         "token_count", "metadata", "created_at", "updated_at"],
    "learnings": ["id", "project_id", "title", "content", "learning_type", "category", "confidence_score",
                  "impact_level", "source_chunks", "tags", "embedding", "verified", "verified_by", "verified_at",
                  "usage_count", "last_used_at", "metadata", "created_at", "updated_at"],
    "learning_applications": ["id", "learning_id", "applied_to_type", "applied_to_id", "context", "outcome",
                              "feedback", "created_at"],
    "search_queries": ["id", "project_id", "query_text", "query_embedding", "search_type", "result_count",
                       "top_result_id", "top_result_similarity", "filters", "user_feedback", "metadata",
                       "created_at"],
    # views, with the fields the document lists
    "learning_effectiveness": ["id", "title", "learning_type", "category", "confidence_score", "usage_count",
                               "application_count", "successful_applications", "failed_applications",
                               "success_rate_percent"],
    "knowledge_coverage_by_project": ["project_id", "project_name", "source_count", "chunk_count",
                                      "learning_count", "total_tokens", "source_type_count", "source_types"],
    "popular_search_queries": ["project_id", "query_text", "query_count", "avg_results", "helpful_count",
                               "not_helpful_count", "last_queried"],
}

INDEXES = [
    "idx_knowledge_sources_project_id", "idx_knowledge_sources_source_type", "idx_knowledge_sources_source_id",
    "idx_knowledge_chunks_source_id", "idx_knowledge_chunks_project_id", "idx_knowledge_chunks_content_hash",
    "idx_knowledge_chunks_embedding",  # HNSW, vector_cosine_ops
    "idx_learnings_project_id", "idx_learnings_learning_type", "idx_learnings_category",
    "idx_learnings_confidence_score", "idx_learnings_impact_level", "idx_learnings_tags", "idx_learnings_verified",
    "idx_learnings_embedding",  # HNSW, vector_cosine_ops
    "idx_learning_applications_learning_id", "idx_learning_applications_outcome",
    "idx_search_queries_project_id", "idx_search_queries_created_at", "idx_search_queries_user_feedback",
]

VIEWS = ["learning_effectiveness", "knowledge_coverage_by_project", "popular_search_queries"]

FUNCTIONS = [
    "search_knowledge_chunks", "search_learnings", "find_similar_learnings", "increment_learning_usage",
    "update_updated_at_column", "track_learning_application", "knowledge_chunk_project_id",
    "propagate_source_project_id",
]

TRIGGERS = [
    "update_knowledge_sources_updated_at", "update_knowledge_chunks_updated_at", "update_learnings_updated_at",
    "track_learning_usage", "set_knowledge_chunk_project_id", "propagate_knowledge_source_project_id",
]

_EMBEDDING = "(SELECT array_fill(0.01::real, ARRAY[1536])::vector)"

EXAMPLE_QUERIES = [
    "SELECT * FROM learning_effectiveness",
    "SELECT * FROM knowledge_coverage_by_project",
    "SELECT * FROM popular_search_queries",
    f"SELECT * FROM search_knowledge_chunks({_EMBEDDING}, NULL, 10, 0.7)",
    f"SELECT * FROM search_knowledge_chunks({_EMBEDDING}, '00000000-0000-0000-0000-000000000001', 5, 0.5)",
    f"SELECT * FROM search_learnings({_EMBEDDING}, NULL, NULL, 10, 0.7)",
    f"SELECT * FROM search_learnings({_EMBEDDING}, NULL, 'database', 10, 0.7)",
    f"SELECT * FROM find_similar_learnings({_EMBEDDING}, NULL, 0.9)",
    "SELECT increment_learning_usage('00000000-0000-0000-0000-000000000001')",
    # end to end: chunks and learnings found by similarity, applications counted, the views
    """DO $$
DECLARE
    v_project UUID;
    v_source  UUID;
    v_chunk   UUID;
    v_learn   UUID;
    v_near    vector := array_fill(0.01::real, ARRAY[1536])::vector;
    v_far     vector := (SELECT array_agg(CASE WHEN i % 2 = 0 THEN 1 ELSE -1 END)::real[]::vector
                         FROM generate_series(1, 1536) AS i);
BEGIN
    INSERT INTO supervisor.projects (name, path) VALUES ('health-agent', '/srv/health-agent')
        RETURNING id INTO v_project;
    INSERT INTO knowledge_sources (project_id, source_type, source_id, title)
    VALUES (v_project, 'adr', 'ADR-001', 'Use PostgreSQL') RETURNING id INTO v_source;
    INSERT INTO knowledge_chunks (source_id, chunk_index, content, content_hash, embedding, token_count)
    VALUES (v_source, 0, 'We use PostgreSQL.', repeat('a', 64), v_near, 5)
    RETURNING id INTO v_chunk;
    INSERT INTO knowledge_chunks (source_id, chunk_index, content, content_hash, embedding, token_count)
    VALUES (v_source, 1, 'Unrelated.', repeat('b', 64), v_far, 2);
    ASSERT (SELECT project_id FROM knowledge_chunks WHERE id = v_chunk) = v_project;
    ASSERT (SELECT count(*) FROM search_knowledge_chunks(v_near, v_project, 10, 0.7)) = 1;
    ASSERT (SELECT chunk_id FROM search_knowledge_chunks(v_near, NULL, 10, 0.7)) = v_chunk;
    INSERT INTO learnings (project_id, title, content, learning_type, category, embedding, source_chunks)
    VALUES (v_project, 'Index foreign keys', 'Always index foreign keys.', 'best_practice', 'database',
            v_near, ARRAY[v_chunk]) RETURNING id INTO v_learn;
    ASSERT (SELECT learning_id FROM search_learnings(v_near, v_project, 'database', 10, 0.7)) = v_learn;
    ASSERT NOT EXISTS (SELECT 1 FROM search_learnings(v_near, v_project, 'frontend', 10, 0.7));
    ASSERT (SELECT count(*) FROM find_similar_learnings(v_near, v_project, 0.9)) = 1;
    INSERT INTO learning_applications (learning_id, applied_to_type, applied_to_id, outcome)
    VALUES (v_learn, 'task', 'TASK-1', 'successful'), (v_learn, 'task', 'TASK-2', 'failed');
    ASSERT increment_learning_usage(v_learn);
    ASSERT (SELECT usage_count FROM learnings WHERE id = v_learn) = 3;
    ASSERT (SELECT success_rate_percent FROM learning_effectiveness WHERE id = v_learn) = 50.00;
    ASSERT (SELECT (chunk_count, total_tokens, learning_count, source_types)
              FROM knowledge_coverage_by_project WHERE project_id = v_project)
           = (2::bigint, 7::bigint, 1::bigint, ARRAY['adr']::varchar[]);
    INSERT INTO search_queries (project_id, query_text, result_count, top_result_id, user_feedback)
    VALUES (v_project, 'postgres', 1, v_chunk, 'helpful'), (v_project, ' Postgres ', 3, v_chunk, NULL);
    ASSERT (SELECT (query_count, avg_results, helpful_count) FROM popular_search_queries
             WHERE project_id = v_project AND query_text = 'postgres') = (2::bigint, 2.00, 1::bigint);
END
$$""",
]
