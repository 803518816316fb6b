-- On a Citus cluster: search_knowledge_chunks as PL/pgSQL running its query with its arguments bound
-- (EXECUTE ... USING), the same query and the same results. Citus cannot plan the SQL function's
-- query over the distributed chunks with its arguments as parameters ("could not create distributed
-- plan"); bound, it runs the ranking on every shard and merges the nearest.
CREATE OR REPLACE FUNCTION knowledge.search_knowledge_chunks(
    query_embedding  vector,
    p_project_id     UUID DEFAULT NULL,
    p_limit          INTEGER DEFAULT 10,
    p_min_similarity DOUBLE PRECISION DEFAULT 0.7
)
RETURNS TABLE (
    chunk_id   UUID,
    source_id  UUID,
    content    TEXT,
    similarity DOUBLE PRECISION,
    metadata   JSONB
)
LANGUAGE plpgsql
STABLE
SET search_path = knowledge, public
AS $$
BEGIN
    RETURN QUERY EXECUTE
        'SELECT kc.id, kc.source_id, kc.content, 1 - (kc.embedding <=> $1), kc.metadata
           FROM knowledge.knowledge_chunks AS kc
          WHERE kc.embedding IS NOT NULL
            AND ($2::uuid IS NULL OR kc.project_id = $2)
            AND 1 - (kc.embedding <=> $1) >= $4
          ORDER BY kc.embedding <=> $1
          LIMIT $3'
        USING query_embedding, p_project_id, p_limit, p_min_similarity;
END;
$$;
