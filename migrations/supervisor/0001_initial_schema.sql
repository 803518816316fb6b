-- supervisor-service (document 003), its migration 001: projects, epics, issues, tasks,
-- service_status and comments, their indexes and updated_at triggers.
--
-- The document gives field lists only. Choices made here (shared by supervisor/0002-0004):
-- * Every id is UUID PRIMARY KEY DEFAULT gen_random_uuid() (built in; no uuid-ossp / pgcrypto).
-- * Every timestamp is TIMESTAMPTZ; created_at / updated_at are NOT NULL DEFAULT now();
--   completed_at / closed_at / last_check are NULL until the event happens.
-- * metadata is JSONB NOT NULL DEFAULT '{}' and must be a JSON object (CHECK).
-- * Names are VARCHAR(255), titles VARCHAR(500), free text (description, content,
--   error_message) TEXT; titles, names and content must not be empty.
-- * Counters and measures may not be negative (CHECK); hours are NUMERIC(8,2), minutes INTEGER.
-- * Fixed vocabularies get a CHECK list; open ones (service types, labels) do not:
--   - projects.status  'active' (default), 'paused', 'archived'
--   - epics.status / tasks.status  'pending' (default), 'in_progress', 'blocked', 'completed',
--     'cancelled'
--   - issues.status  'open' (default), 'in_progress', 'closed'
--   - priority (epics, issues)  'low', 'medium' (default), 'high', 'critical'
--   - complexity (epics, and task_executions / estimation_patterns in 0004)  'simple',
--     'moderate', 'complex'
--   - service_status.status  'unknown' (default), 'healthy', 'degraded', 'unhealthy'
-- * Foreign keys: every project_id is NOT NULL ... ON DELETE CASCADE (a project owns its
--   planning data). issues.epic_id and tasks.epic_id are nullable, ON DELETE SET NULL (an issue
--   or task outlives its epic). tasks.issue_id is nullable, ON DELETE CASCADE (a task breaks an
--   issue down). comments.issue_id / task_id are ON DELETE CASCADE and a comment belongs to
--   exactly one of the two (CHECK num_nonnulls(issue_id, task_id) = 1).
-- * Uniqueness the field lists imply: projects.name (the document looks projects up by name:
--   getProjectByName), epics (project_id, epic_id) where epic_id is the human key such as
--   'EPIC-004' (VARCHAR(50)), issues (project_id, issue_number) where issue_number is the
--   GitHub-style number (INTEGER > 0, NULL before the issue is pushed), issues.github_id and
--   comments.github_id (GitHub's numeric ids, BIGINT), service_status (project_id, service_name)
--   (one current-status row per service, updated in place).
-- * projects.path TEXT NOT NULL (createProject always passes one); issues.labels TEXT[] and
--   epics.dependencies TEXT[] (the epic_id keys this epic depends on) are NOT NULL DEFAULT '{}';
--   tasks.order_index INTEGER NOT NULL DEFAULT 0.
-- Indexes: the document lists indexed columns without names; each is idx_<table>_<column>.
-- idx_projects_name and idx_issues_github_id are the unique indexes themselves (no column is
-- indexed twice); idx_issues_labels is GIN.
-- Triggers: update_<table>_updated_at on every table with updated_at, calling this schema's
-- update_updated_at_column() (also used by supervisor/0002-0004).
-- depends: 0006_key_row_share_lock

SET LOCAL search_path = supervisor, public;
CREATE SCHEMA IF NOT EXISTS supervisor;

CREATE FUNCTION update_updated_at_column()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE projects (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name        VARCHAR(255) NOT NULL CHECK (name <> ''),
    path        TEXT NOT NULL,
    description TEXT,
    status      VARCHAR(20) NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'paused', 'archived')),
    metadata    JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX idx_projects_name ON projects (name);
CREATE INDEX idx_projects_status ON projects (status);

CREATE TABLE epics (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id      UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    epic_id         VARCHAR(50) NOT NULL CHECK (epic_id <> ''),
    title           VARCHAR(500) NOT NULL CHECK (title <> ''),
    description     TEXT,
    status          VARCHAR(20) NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'in_progress', 'blocked', 'completed', 'cancelled')),
    priority        VARCHAR(20) NOT NULL DEFAULT 'medium'
                    CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    estimated_hours NUMERIC(8,2) CHECK (estimated_hours >= 0),
    actual_hours    NUMERIC(8,2) CHECK (actual_hours >= 0),
    complexity      VARCHAR(20) CHECK (complexity IN ('simple', 'moderate', 'complex')),
    dependencies    TEXT[] NOT NULL DEFAULT '{}',
    metadata        JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at    TIMESTAMPTZ,
    CONSTRAINT epics_project_id_epic_id_key UNIQUE (project_id, epic_id)
);

CREATE INDEX idx_epics_project_id ON epics (project_id);
CREATE INDEX idx_epics_epic_id ON epics (epic_id);
CREATE INDEX idx_epics_status ON epics (status);
CREATE INDEX idx_epics_priority ON epics (priority);

CREATE TABLE issues (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id   UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    epic_id      UUID REFERENCES epics (id) ON DELETE SET NULL,
    issue_number INTEGER CHECK (issue_number > 0),
    title        VARCHAR(500) NOT NULL CHECK (title <> ''),
    description  TEXT,
    status       VARCHAR(20) NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'in_progress', 'closed')),
    priority     VARCHAR(20) NOT NULL DEFAULT 'medium'
                 CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    labels       TEXT[] NOT NULL DEFAULT '{}',
    assignee     VARCHAR(255),
    github_id    BIGINT,
    github_url   TEXT,
    metadata     JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at    TIMESTAMPTZ,
    CONSTRAINT issues_project_id_issue_number_key UNIQUE (project_id, issue_number)
);

CREATE INDEX idx_issues_project_id ON issues (project_id);
CREATE INDEX idx_issues_epic_id ON issues (epic_id);
CREATE INDEX idx_issues_status ON issues (status);
CREATE INDEX idx_issues_priority ON issues (priority);
CREATE UNIQUE INDEX idx_issues_github_id ON issues (github_id);
CREATE INDEX idx_issues_labels ON issues USING gin (labels);

CREATE TABLE tasks (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id        UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    epic_id           UUID REFERENCES epics (id) ON DELETE SET NULL,
    issue_id          UUID REFERENCES issues (id) ON DELETE CASCADE,
    title             VARCHAR(500) NOT NULL CHECK (title <> ''),
    description       TEXT,
    status            VARCHAR(20) NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'in_progress', 'blocked', 'completed', 'cancelled')),
    order_index       INTEGER NOT NULL DEFAULT 0,
    estimated_minutes INTEGER CHECK (estimated_minutes >= 0),
    actual_minutes    INTEGER CHECK (actual_minutes >= 0),
    metadata          JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at      TIMESTAMPTZ
);

CREATE INDEX idx_tasks_project_id ON tasks (project_id);
CREATE INDEX idx_tasks_epic_id ON tasks (epic_id);
CREATE INDEX idx_tasks_issue_id ON tasks (issue_id);
CREATE INDEX idx_tasks_status ON tasks (status);
CREATE INDEX idx_tasks_order_index ON tasks (order_index);

CREATE TABLE service_status (
    id               UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id       UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    service_name     VARCHAR(255) NOT NULL CHECK (service_name <> ''),
    status           VARCHAR(20) NOT NULL DEFAULT 'unknown'
                     CHECK (status IN ('unknown', 'healthy', 'degraded', 'unhealthy')),
    last_check       TIMESTAMPTZ,
    response_time_ms INTEGER CHECK (response_time_ms >= 0),
    error_message    TEXT,
    metadata         JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT service_status_project_id_service_name_key UNIQUE (project_id, service_name)
);

CREATE INDEX idx_service_status_project_id ON service_status (project_id);
CREATE INDEX idx_service_status_status ON service_status (status);
CREATE INDEX idx_service_status_last_check ON service_status (last_check);

CREATE TABLE comments (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    issue_id   UUID REFERENCES issues (id) ON DELETE CASCADE,
    task_id    UUID REFERENCES tasks (id) ON DELETE CASCADE,
    author     VARCHAR(255) NOT NULL CHECK (author <> ''),
    content    TEXT NOT NULL CHECK (content <> ''),
    github_id  BIGINT,
    metadata   JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT comments_github_id_key UNIQUE (github_id),
    CONSTRAINT comments_one_parent CHECK (num_nonnulls(issue_id, task_id) = 1)
);

CREATE INDEX idx_comments_issue_id ON comments (issue_id);
CREATE INDEX idx_comments_task_id ON comments (task_id);
CREATE INDEX idx_comments_created_at ON comments (created_at);

CREATE TRIGGER update_projects_updated_at
    BEFORE UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_epics_updated_at
    BEFORE UPDATE ON epics
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_issues_updated_at
    BEFORE UPDATE ON issues
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_tasks_updated_at
    BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_service_status_updated_at
    BEFORE UPDATE ON service_status
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_comments_updated_at
    BEFORE UPDATE ON comments
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
