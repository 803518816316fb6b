-- On a Citus cluster: knowledge_coverage_by_project with the same columns and rows, each count an
-- aggregate grouped by project and joined to the projects, instead of a LATERAL subquery correlated
-- with each project (Citus plans no correlated subquery over distributed tables on another column
-- than their distribution column; "direct joins between distributed and local tables").
CREATE OR REPLACE VIEW knowledge.knowledge_coverage_by_project AS
SELECT
    p.id                                  AS project_id,
    p.name                                AS project_name,
    coalesce(s.source_count, 0)           AS source_count,
    coalesce(c.chunk_count, 0)            AS chunk_count,
    coalesce(lc.learning_count, 0)        AS learning_count,
    coalesce(c.total_tokens, 0)           AS total_tokens,
    coalesce(s.source_type_count, 0)      AS source_type_count,
    coalesce(s.source_types, '{}')        AS source_types
FROM supervisor.projects AS p
LEFT JOIN (
    SELECT ks.project_id,
           count(*)                                                       AS source_count,
           count(DISTINCT ks.source_type)                                 AS source_type_count,
           coalesce(array_agg(DISTINCT ks.source_type ORDER BY ks.source_type)
                        FILTER (WHERE ks.source_type IS NOT NULL),
                    '{}')                                                 AS source_types
    FROM knowledge.knowledge_sources AS ks
    GROUP BY ks.project_id
) AS s ON s.project_id = p.id
LEFT JOIN (
    SELECT ks.project_id,
           count(kc.id)                       AS chunk_count,
           coalesce(sum(kc.token_count), 0)   AS total_tokens
    FROM knowledge.knowledge_sources AS ks
    JOIN knowledge.knowledge_chunks AS kc ON kc.source_id = ks.id
    GROUP BY ks.project_id
) AS c ON c.project_id = p.id
LEFT JOIN (
    SELECT l.project_id, count(*) AS learning_count
    FROM knowledge.learnings AS l
    GROUP BY l.project_id
) AS lc ON lc.project_id = p.id;
