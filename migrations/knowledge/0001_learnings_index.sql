-- supervisor-service (document 003), its migration 005: the learnings index (RAG) with pgvector:
-- knowledge_sources, knowledge_chunks, learnings, learning_applications, search_queries, the
-- functions search_knowledge_chunks, search_learnings, find_similar_learnings and
-- increment_learning_usage, and the views learning_effectiveness, knowledge_coverage_by_project
-- and popular_search_queries.
--
-- Needs the pgvector extension (type vector, operator <=>, operator class vector_cosine_ops in
-- schema public), which `minnoctl db init` creates; this file never does. Projects are the
-- supervisor module's: references are qualified, supervisor.projects(id).
--
-- The document gives field lists only. Choices made here:
-- * Every id is UUID PRIMARY KEY DEFAULT gen_random_uuid(); timestamps TIMESTAMPTZ, created_at /
--   updated_at NOT NULL DEFAULT now(); metadata / filters JSONB NOT NULL DEFAULT '{}', a JSON
--   object (CHECK); titles VARCHAR(500), names VARCHAR(255), text TEXT, not empty.
-- * Embeddings are vector(1536) (OpenAI text-embedding-3-small / ada-002), nullable (a row may be
--   stored before its embedding is computed). knowledge_chunks.embedding and learnings.embedding
--   have HNSW indexes with vector_cosine_ops (pgvector's default m / ef_construction): all
--   searches rank by cosine distance, similarity = 1 - cosine distance (DOUBLE PRECISION, from
--   -1 to 1).
-- * project_id is nullable everywhere (NULL = knowledge shared by all projects), ON DELETE
--   CASCADE to supervisor.projects.
-- * knowledge_sources: source_type VARCHAR(50) NOT NULL, an open vocabulary (adr, issue, epic,
--   task, code, documentation, external, ...), so no CHECK list; source_id VARCHAR(255) is the
--   external reference (an epic key, an issue number, a file path), not a foreign key; url,
--   file_path TEXT; author VARCHAR(255); indexed_at NULL until the source is chunked.
-- * knowledge_chunks: source_id NOT NULL, ON DELETE CASCADE; chunk_index INTEGER NOT NULL >= 0,
--   unique per source; content TEXT NOT NULL; content_hash CHAR(64) NOT NULL, the lower-case hex
--   SHA-256 of content computed by the application (CHECK on the format), indexed for
--   de-duplication but not unique (two sources may share a paragraph); token_count INTEGER >= 0.
--   A chunk's project_id is always its source's: the trigger set_knowledge_chunk_project_id
--   (function knowledge_chunk_project_id) copies it on insert and on every update of source_id
--   or project_id (a project_id written by hand is overridden), and
--   propagate_knowledge_source_project_id (function propagate_source_project_id) follows a
--   source that moves to another project.
-- * learnings: learning_type VARCHAR(50) NOT NULL (open vocabulary: pattern, best_practice,
--   antipattern, lesson_learned, tip, ...); category VARCHAR(100); confidence_score NUMERIC(3,2)
--   NOT NULL DEFAULT 0.50, BETWEEN 0 AND 1; impact_level VARCHAR(20) NOT NULL DEFAULT 'medium'
--   CHECK IN ('low', 'medium', 'high', 'critical'); source_chunks UUID[] NOT NULL DEFAULT '{}'
--   (ids of knowledge_chunks; PostgreSQL cannot enforce foreign keys on array elements); tags
--   TEXT[] NOT NULL DEFAULT '{}' (GIN index); verified BOOLEAN NOT NULL DEFAULT false, and an
--   unverified learning has no verified_by / verified_at (CHECK); usage_count INTEGER NOT NULL
--   DEFAULT 0 (>= 0); last_used_at NULL until first used. Its updated_at trigger fires only when
--   something other than usage_count / last_used_at changes (using a learning is not editing it).
-- * learning_applications: learning_id NOT NULL, ON DELETE CASCADE; applied_to_type VARCHAR(50)
--   NOT NULL (epic, issue, task, code_review, ...); applied_to_id VARCHAR(255) (the id of the
--   epic / issue / task, or an external reference such as a pull request); outcome VARCHAR(20)
--   CHECK IN ('successful', 'failed', 'partial'), NULL while unknown; append-only (created_at).
--   "Learning applications are automatically logged" (document): the trigger track_learning_usage
--   (function track_learning_application) calls increment_learning_usage for every application
--   recorded, so usage_count counts applications plus the application's own calls.
-- * search_queries: query_text TEXT NOT NULL; query_embedding vector(1536) (not indexed: the log
--   is not searched by similarity); search_type VARCHAR(20) NOT NULL DEFAULT 'semantic' CHECK IN
--   ('semantic', 'keyword', 'hybrid'); result_count INTEGER >= 0; top_result_id ->
--   knowledge_chunks(id) ON DELETE SET NULL (the log outlives the chunk); top_result_similarity
--   NUMERIC(5,4) BETWEEN -1 AND 1; user_feedback VARCHAR(20) CHECK IN ('helpful',
--   'not_helpful', 'partial'), NULL until given; append-only (created_at).
-- Functions (the three searches are SQL, STABLE; rows without an embedding never match):
-- * search_knowledge_chunks(query_embedding, project_id DEFAULT NULL, limit DEFAULT 10,
--   min_similarity DEFAULT 0.7) -> (chunk_id, source_id, content, similarity, metadata), most
--   similar first; project_id NULL searches every project, otherwise exactly that project.
-- * search_learnings(query_embedding, project_id DEFAULT NULL, category DEFAULT NULL,
--   limit DEFAULT 10, min_similarity DEFAULT 0.7) -> (learning_id, title, content,
--   learning_type, category, similarity, confidence_score); NULL filters match everything.
-- * find_similar_learnings(embedding, project_id DEFAULT NULL, similarity_threshold DEFAULT
--   0.9, limit DEFAULT 10) -> (learning_id, title, similarity): candidate duplicates. The limit
--   parameter is an addition (an HNSW index is only used with ORDER BY ... LIMIT).
-- * increment_learning_usage(learning_id) adds 1 to usage_count, sets last_used_at = now(), and
--   returns whether the learning exists.
-- * With a selective project / category filter an HNSW scan may return fewer than limit rows
--   (it filters the ef_search nearest candidates); callers on pgvector >= 0.8 may SET
--   hnsw.iterative_scan = strict_order for such searches.
-- Views:
-- * learning_effectiveness: every learning with its application_count, successful / failed
--   applications and success_rate_percent = successful / all applications * 100 (two
--   decimals), NULL when it was never applied.
-- * knowledge_coverage_by_project: every supervisor project with its numbers of sources, chunks
--   (of its sources) and learnings, total_tokens (0 when none), and its distinct source types
--   (source_type_count, source_types sorted, '{}' when none). Each figure is counted in its own
--   subquery, so chunks and learnings do not multiply each other.
-- * popular_search_queries: the 50 most frequent (project_id, query) pairs, most frequent
--   first (ties: most recently asked first); queries are grouped by lower-cased, trimmed
--   query_text, which is the query_text shown; avg_results has two decimals.
-- depends: 0006_key_row_share_lock 0006_port_pool

SET LOCAL search_path = knowledge, public;
CREATE SCHEMA IF NOT EXISTS knowledge;

CREATE FUNCTION update_updated_at_column()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = knowledge, public
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE knowledge_sources (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  UUID REFERENCES supervisor.projects (id) ON DELETE CASCADE,
    source_type VARCHAR(50) NOT NULL CHECK (source_type <> ''),
    source_id   VARCHAR(255),
    title       VARCHAR(500) NOT NULL CHECK (title <> ''),
    url         TEXT,
    file_path   TEXT,
    author      VARCHAR(255),
    metadata    JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    indexed_at  TIMESTAMPTZ
);

CREATE INDEX idx_knowledge_sources_project_id ON knowledge_sources (project_id);
CREATE INDEX idx_knowledge_sources_source_type ON knowledge_sources (source_type);
CREATE INDEX idx_knowledge_sources_source_id ON knowledge_sources (source_id);

CREATE TABLE knowledge_chunks (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    source_id    UUID NOT NULL REFERENCES knowledge_sources (id) ON DELETE CASCADE,
    project_id   UUID REFERENCES supervisor.projects (id) ON DELETE CASCADE,
    chunk_index  INTEGER NOT NULL CHECK (chunk_index >= 0),
    content      TEXT NOT NULL CHECK (content <> ''),
    content_hash CHAR(64) NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    embedding    vector(1536),
    token_count  INTEGER CHECK (token_count >= 0),
    metadata     JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT knowledge_chunks_source_id_chunk_index_key UNIQUE (source_id, chunk_index)
);

CREATE INDEX idx_knowledge_chunks_source_id ON knowledge_chunks (source_id);
CREATE INDEX idx_knowledge_chunks_project_id ON knowledge_chunks (project_id);
CREATE INDEX idx_knowledge_chunks_content_hash ON knowledge_chunks (content_hash);
CREATE INDEX idx_knowledge_chunks_embedding ON knowledge_chunks
    USING hnsw (embedding vector_cosine_ops);

CREATE TABLE learnings (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id       UUID REFERENCES supervisor.projects (id) ON DELETE CASCADE,
    title            VARCHAR(500) NOT NULL CHECK (title <> ''),
    content          TEXT NOT NULL CHECK (content <> ''),
    learning_type    VARCHAR(50) NOT NULL CHECK (learning_type <> ''),
    category         VARCHAR(100),
    confidence_score NUMERIC(3,2) NOT NULL DEFAULT 0.50 CHECK (confidence_score BETWEEN 0 AND 1),
    impact_level     VARCHAR(20) NOT NULL DEFAULT 'medium'
                     CHECK (impact_level IN ('low', 'medium', 'high', 'critical')),
    source_chunks    UUID[] NOT NULL DEFAULT '{}',
    tags             TEXT[] NOT NULL DEFAULT '{}',
    embedding        vector(1536),
    verified         BOOLEAN NOT NULL DEFAULT false,
    verified_by      VARCHAR(255),
    verified_at      TIMESTAMPTZ,
    usage_count      INTEGER NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    last_used_at     TIMESTAMPTZ,
    metadata         JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT learnings_unverified_has_no_verifier
        CHECK (verified OR (verified_by IS NULL AND verified_at IS NULL))
);

CREATE INDEX idx_learnings_project_id ON learnings (project_id);
CREATE INDEX idx_learnings_learning_type ON learnings (learning_type);
CREATE INDEX idx_learnings_category ON learnings (category);
CREATE INDEX idx_learnings_confidence_score ON learnings (confidence_score);
CREATE INDEX idx_learnings_impact_level ON learnings (impact_level);
CREATE INDEX idx_learnings_tags ON learnings USING gin (tags);
CREATE INDEX idx_learnings_verified ON learnings (verified);
CREATE INDEX idx_learnings_embedding ON learnings
    USING hnsw (embedding vector_cosine_ops);

CREATE TABLE learning_applications (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    learning_id     UUID NOT NULL REFERENCES learnings (id) ON DELETE CASCADE,
    applied_to_type VARCHAR(50) NOT NULL CHECK (applied_to_type <> ''),
    applied_to_id   VARCHAR(255),
    context         TEXT,
    outcome         VARCHAR(20) CHECK (outcome IN ('successful', 'failed', 'partial')),
    feedback        TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_learning_applications_learning_id ON learning_applications (learning_id);
CREATE INDEX idx_learning_applications_outcome ON learning_applications (outcome);

CREATE TABLE search_queries (
    id                    UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id            UUID REFERENCES supervisor.projects (id) ON DELETE CASCADE,
    query_text            TEXT NOT NULL CHECK (query_text <> ''),
    query_embedding       vector(1536),
    search_type           VARCHAR(20) NOT NULL DEFAULT 'semantic'
                          CHECK (search_type IN ('semantic', 'keyword', 'hybrid')),
    result_count          INTEGER CHECK (result_count >= 0),
    top_result_id         UUID REFERENCES knowledge_chunks (id) ON DELETE SET NULL,
    top_result_similarity NUMERIC(5,4) CHECK (top_result_similarity BETWEEN -1 AND 1),
    filters               JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(filters) = 'object'),
    user_feedback         VARCHAR(20) CHECK (user_feedback IN ('helpful', 'not_helpful', 'partial')),
    metadata              JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_search_queries_project_id ON search_queries (project_id);
CREATE INDEX idx_search_queries_created_at ON search_queries (created_at);
CREATE INDEX idx_search_queries_user_feedback ON search_queries (user_feedback);

CREATE FUNCTION knowledge_chunk_project_id()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = knowledge, public
AS $$
BEGIN
    SELECT ks.project_id INTO NEW.project_id FROM knowledge_sources AS ks WHERE ks.id = NEW.source_id;
    RETURN NEW;
END;
$$;

CREATE TRIGGER set_knowledge_chunk_project_id
    BEFORE INSERT OR UPDATE OF source_id, project_id ON knowledge_chunks
    FOR EACH ROW EXECUTE FUNCTION knowledge_chunk_project_id();

CREATE FUNCTION propagate_source_project_id()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = knowledge, public
AS $$
BEGIN
    UPDATE knowledge_chunks SET project_id = NEW.project_id WHERE source_id = NEW.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER propagate_knowledge_source_project_id
    AFTER UPDATE OF project_id ON knowledge_sources
    FOR EACH ROW
    WHEN (OLD.project_id IS DISTINCT FROM NEW.project_id)
    EXECUTE FUNCTION propagate_source_project_id();

CREATE FUNCTION search_knowledge_chunks(
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
LANGUAGE sql
STABLE
SET search_path = knowledge, public
AS $$
    SELECT kc.id,
           kc.source_id,
           kc.content,
           1 - (kc.embedding <=> query_embedding),
           kc.metadata
      FROM knowledge_chunks AS kc
     WHERE kc.embedding IS NOT NULL
       AND (p_project_id IS NULL OR kc.project_id = p_project_id)
       AND 1 - (kc.embedding <=> query_embedding) >= p_min_similarity
     ORDER BY kc.embedding <=> query_embedding
     LIMIT p_limit;
$$;

CREATE FUNCTION search_learnings(
    query_embedding  vector,
    p_project_id     UUID DEFAULT NULL,
    p_category       VARCHAR DEFAULT NULL,
    p_limit          INTEGER DEFAULT 10,
    p_min_similarity DOUBLE PRECISION DEFAULT 0.7
)
RETURNS TABLE (
    learning_id      UUID,
    title            VARCHAR,
    content          TEXT,
    learning_type    VARCHAR,
    category         VARCHAR,
    similarity       DOUBLE PRECISION,
    confidence_score NUMERIC
)
LANGUAGE sql
STABLE
SET search_path = knowledge, public
AS $$
    SELECT l.id,
           l.title,
           l.content,
           l.learning_type,
           l.category,
           1 - (l.embedding <=> query_embedding),
           l.confidence_score
      FROM learnings AS l
     WHERE l.embedding IS NOT NULL
       AND (p_project_id IS NULL OR l.project_id = p_project_id)
       AND (p_category IS NULL OR l.category = p_category)
       AND 1 - (l.embedding <=> query_embedding) >= p_min_similarity
     ORDER BY l.embedding <=> query_embedding
     LIMIT p_limit;
$$;

CREATE FUNCTION find_similar_learnings(
    p_embedding            vector,
    p_project_id           UUID DEFAULT NULL,
    p_similarity_threshold DOUBLE PRECISION DEFAULT 0.9,
    p_limit                INTEGER DEFAULT 10
)
RETURNS TABLE (
    learning_id UUID,
    title       VARCHAR,
    similarity  DOUBLE PRECISION
)
LANGUAGE sql
STABLE
SET search_path = knowledge, public
AS $$
    SELECT l.id,
           l.title,
           1 - (l.embedding <=> p_embedding)
      FROM learnings AS l
     WHERE l.embedding IS NOT NULL
       AND (p_project_id IS NULL OR l.project_id = p_project_id)
       AND 1 - (l.embedding <=> p_embedding) >= p_similarity_threshold
     ORDER BY l.embedding <=> p_embedding
     LIMIT p_limit;
$$;

CREATE FUNCTION increment_learning_usage(p_learning_id UUID)
RETURNS BOOLEAN
LANGUAGE plpgsql
SET search_path = knowledge, public
AS $$
BEGIN
    UPDATE learnings
       SET usage_count = usage_count + 1,
           last_used_at = now()
     WHERE id = p_learning_id;
    RETURN FOUND;
END;
$$;

CREATE FUNCTION track_learning_application()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = knowledge, public
AS $$
BEGIN
    PERFORM increment_learning_usage(NEW.learning_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER track_learning_usage
    AFTER INSERT ON learning_applications
    FOR EACH ROW EXECUTE FUNCTION track_learning_application();

CREATE TRIGGER update_knowledge_sources_updated_at
    BEFORE UPDATE ON knowledge_sources
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_knowledge_chunks_updated_at
    BEFORE UPDATE ON knowledge_chunks
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_learnings_updated_at
    BEFORE UPDATE ON learnings
    FOR EACH ROW
    WHEN ((OLD.project_id, OLD.title, OLD.content, OLD.learning_type, OLD.category,
           OLD.confidence_score, OLD.impact_level, OLD.source_chunks, OLD.tags, OLD.embedding,
           OLD.verified, OLD.verified_by, OLD.verified_at, OLD.metadata)
          IS DISTINCT FROM
          (NEW.project_id, NEW.title, NEW.content, NEW.learning_type, NEW.category,
           NEW.confidence_score, NEW.impact_level, NEW.source_chunks, NEW.tags, NEW.embedding,
           NEW.verified, NEW.verified_by, NEW.verified_at, NEW.metadata))
    EXECUTE FUNCTION update_updated_at_column();

CREATE VIEW learning_effectiveness AS
SELECT
    l.id,
    l.title,
    l.learning_type,
    l.category,
    l.confidence_score,
    l.usage_count,
    a.application_count,
    a.successful_applications,
    a.failed_applications,
    CASE WHEN a.application_count > 0
         THEN round(100.0 * a.successful_applications / a.application_count, 2)
    END AS success_rate_percent
FROM learnings AS l
CROSS JOIN LATERAL (
    SELECT count(*)                                          AS application_count,
           count(*) FILTER (WHERE la.outcome = 'successful') AS successful_applications,
           count(*) FILTER (WHERE la.outcome = 'failed')     AS failed_applications
    FROM learning_applications AS la
    WHERE la.learning_id = l.id
) AS a;

CREATE VIEW knowledge_coverage_by_project AS
SELECT
    p.id                   AS project_id,
    p.name                 AS project_name,
    s.source_count,
    c.chunk_count,
    lc.learning_count,
    c.total_tokens,
    s.source_type_count,
    s.source_types
FROM supervisor.projects AS p
CROSS JOIN LATERAL (
    SELECT count(*)                                                       AS source_count,
           count(DISTINCT ks.source_type)                                 AS source_type_count,
           coalesce(array_agg(DISTINCT ks.source_type ORDER BY ks.source_type)
                        FILTER (WHERE ks.source_type IS NOT NULL),
                    '{}')                                                 AS source_types
    FROM knowledge_sources AS ks
    WHERE ks.project_id = p.id
) AS s
CROSS JOIN LATERAL (
    SELECT count(kc.id)                       AS chunk_count,
           coalesce(sum(kc.token_count), 0)   AS total_tokens
    FROM knowledge_sources AS ks
    JOIN knowledge_chunks AS kc ON kc.source_id = ks.id
    WHERE ks.project_id = p.id
) AS c
CROSS JOIN LATERAL (
    SELECT count(*) AS learning_count
    FROM learnings AS l
    WHERE l.project_id = p.id
) AS lc;

CREATE VIEW popular_search_queries AS
SELECT
    sq.project_id,
    lower(btrim(sq.query_text))                                   AS query_text,
    count(*)                                                      AS query_count,
    round(avg(sq.result_count), 2)                                AS avg_results,
    count(*) FILTER (WHERE sq.user_feedback = 'helpful')          AS helpful_count,
    count(*) FILTER (WHERE sq.user_feedback = 'not_helpful')      AS not_helpful_count,
    max(sq.created_at)                                            AS last_queried
FROM search_queries AS sq
GROUP BY sq.project_id, lower(btrim(sq.query_text))
ORDER BY query_count DESC, last_queried DESC
LIMIT 50;
