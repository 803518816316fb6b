-- supervisor-service (document 003), its migration 004: task_executions, estimation_patterns,
-- time_tracking_sessions, estimation_factors, task_execution_factors, the functions
-- calculate_execution_metrics (trigger), update_estimation_pattern and get_recommended_estimate,
-- and the views estimation_accuracy_by_project and task_performance_trends.
--
-- Conventions as in supervisor/0001 (UUID ids, TIMESTAMPTZ, metadata a JSONB object,
-- idx_<table>_<column> index names, update_<table>_updated_at triggers). Choices made here:
-- * Durations and estimates are whole minutes (INTEGER, >= 0; estimated_minutes > 0 so that a
--   variance percentage always exists); variance_percent and factor values NUMERIC(10,2) (a
--   task can take ten times its estimate: variances above 999 % must fit); a pattern's running
--   average and standard deviation NUMERIC(12,4), so that the incremental updates do not drift.
-- * complexity is 'simple', 'moderate' or 'complex' (CHECK), as for epics in 0001; task_type
--   and activity_type are open vocabularies (no CHECK list).
-- * task_executions: task_id and project_id NOT NULL, ON DELETE CASCADE. project_id repeats the
--   task's project; the foreign key task_executions_task_project_fkey (task_id, project_id) ->
--   tasks (id, project_id) ON UPDATE CASCADE keeps the two consistent (it needs the unique
--   constraint tasks_id_project_id_key, added to tasks here). execution_number INTEGER NOT NULL
--   DEFAULT 1 (> 0), unique per task. started_at NOT NULL DEFAULT now(); completed_at, when
--   set, not before started_at. status VARCHAR(20) NOT NULL DEFAULT 'running' CHECK IN
--   ('running', 'paused', 'completed', 'failed', 'cancelled'); a 'completed' execution has a
--   completed_at. context_switches / interruptions INTEGER NOT NULL DEFAULT 0 (>= 0); blockers
--   TEXT[] NOT NULL DEFAULT '{}' (one description per blocker).
-- * calculate_execution_metrics() (trigger calculate_task_execution_metrics, BEFORE INSERT OR
--   UPDATE) owns duration_minutes, variance_minutes and variance_percent: duration = wall-clock
--   minutes from started_at to completed_at (rounded), variance = duration - estimate, variance
--   percent = variance / estimate * 100 (two decimals); all NULL while completed_at or the
--   estimate is missing. Setting completed_at moves a 'running' or 'paused' execution to
--   'completed'; setting status 'completed' without a completed_at stamps completed_at = now().
-- * estimation_patterns: project_id NOT NULL, ON DELETE CASCADE (NOT NULL also makes the
--   documented UNIQUE (project_id, pattern_name, task_type, complexity) effective: NULLs would
--   never conflict). avg_duration_minutes NUMERIC(12,4) NOT NULL DEFAULT 0 (>= 0);
--   std_deviation NUMERIC(12,4), the sample standard deviation, NULL below two samples;
--   sample_count INTEGER NOT NULL DEFAULT 0 (>= 0; a row seeded with 0 samples holds a prior
--   guess that the first real sample replaces); confidence_score NUMERIC(3,2) NOT NULL
--   DEFAULT 0, BETWEEN 0 AND 1; factors JSONB NOT NULL DEFAULT '{}' (an object, e.g.
--   {"dependencies": 3}).
-- * update_estimation_pattern(project_id, task_type, complexity, duration_minutes) adds one
--   sample to the pattern named '<task_type>_<complexity>' of that project (creating it first
--   with INSERT ... ON CONFLICT DO NOTHING, then locking it with FOR UPDATE, so concurrent
--   callers neither collide on the unique key nor lose an update). The average and standard
--   deviation are updated incrementally (Welford); confidence_score = min(1, samples / 10).
--   It returns the updated estimation_patterns row; a NULL or negative duration is an error
--   (SQLSTATE 22023).
-- * get_recommended_estimate(project_id, task_type, complexity) returns the rounded average
--   (INTEGER minutes) of the matching pattern with the highest confidence among those with at
--   least 3 samples, or NULL when there is none.
-- * time_tracking_sessions: task_execution_id NOT NULL, ON DELETE CASCADE; session_number
--   INTEGER NOT NULL (> 0), unique per execution; started_at NOT NULL DEFAULT now(); ended_at
--   not before started_at; duration_minutes (>= 0) is written by the application (pauses are
--   outside sessions); productivity_rating SMALLINT BETWEEN 1 AND 5.
-- * estimation_factors: factor_name VARCHAR(255) NOT NULL UNIQUE; impact_type VARCHAR(20) NOT
--   NULL CHECK IN ('multiplier', 'additive', 'percentage'); average_impact NUMERIC(10,2).
-- * task_execution_factors: task_execution_id NOT NULL, ON DELETE CASCADE; factor_id NOT NULL,
--   ON DELETE RESTRICT (a factor used by recorded executions is kept); factor_value
--   NUMERIC(10,2); append-only (created_at, no updated_at).
-- Fixes of the document's views (their obvious readings had flaws):
-- * estimation_accuracy_by_project lists every project (0 executions when it has none): the
--   filter on completed executions with a variance is part of the join, not a WHERE that would
--   turn the LEFT JOIN into an inner one. over_estimated counts executions that took LESS than
--   estimated (variance_percent < 0), under_estimated those that took MORE (> 0). Averages and
--   standard deviations are rounded to two decimals.
-- * task_performance_trends: tasks with more than one completed execution, statistics over the
--   completed executions only.
-- depends: 0003_port_allocation

SET LOCAL search_path = supervisor, public;

ALTER TABLE tasks ADD CONSTRAINT tasks_id_project_id_key UNIQUE (id, project_id);

CREATE TABLE task_executions (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id           UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    project_id        UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    execution_number  INTEGER NOT NULL DEFAULT 1 CHECK (execution_number > 0),
    started_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at      TIMESTAMPTZ,
    duration_minutes  INTEGER CHECK (duration_minutes >= 0),
    estimated_minutes INTEGER CHECK (estimated_minutes > 0),
    variance_minutes  INTEGER,
    variance_percent  NUMERIC(10,2),
    status            VARCHAR(20) NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'paused', 'completed', 'failed', 'cancelled')),
    complexity        VARCHAR(20) CHECK (complexity IN ('simple', 'moderate', 'complex')),
    context_switches  INTEGER NOT NULL DEFAULT 0 CHECK (context_switches >= 0),
    interruptions     INTEGER NOT NULL DEFAULT 0 CHECK (interruptions >= 0),
    blockers          TEXT[] NOT NULL DEFAULT '{}',
    notes             TEXT,
    metadata          JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT task_executions_task_id_execution_number_key UNIQUE (task_id, execution_number),
    CONSTRAINT task_executions_task_project_fkey FOREIGN KEY (task_id, project_id)
        REFERENCES tasks (id, project_id) ON UPDATE CASCADE ON DELETE CASCADE,
    CONSTRAINT task_executions_completed_after_start
        CHECK (completed_at >= started_at),
    CONSTRAINT task_executions_completed_has_time
        CHECK (status <> 'completed' OR completed_at IS NOT NULL)
);

CREATE INDEX idx_task_executions_task_id ON task_executions (task_id);
CREATE INDEX idx_task_executions_project_id ON task_executions (project_id);
CREATE INDEX idx_task_executions_status ON task_executions (status);
CREATE INDEX idx_task_executions_started_at ON task_executions (started_at);
CREATE INDEX idx_task_executions_complexity ON task_executions (complexity);

CREATE TABLE estimation_patterns (
    id                   UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id           UUID NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    pattern_name         VARCHAR(255) NOT NULL CHECK (pattern_name <> ''),
    task_type            VARCHAR(100) NOT NULL CHECK (task_type <> ''),
    complexity           VARCHAR(20) NOT NULL CHECK (complexity IN ('simple', 'moderate', 'complex')),
    avg_duration_minutes NUMERIC(12,4) NOT NULL DEFAULT 0 CHECK (avg_duration_minutes >= 0),
    std_deviation        NUMERIC(12,4) CHECK (std_deviation >= 0),
    sample_count         INTEGER NOT NULL DEFAULT 0 CHECK (sample_count >= 0),
    confidence_score     NUMERIC(3,2) NOT NULL DEFAULT 0 CHECK (confidence_score BETWEEN 0 AND 1),
    factors              JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(factors) = 'object'),
    metadata             JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT estimation_patterns_project_pattern_type_complexity_key
        UNIQUE (project_id, pattern_name, task_type, complexity)
);

CREATE INDEX idx_estimation_patterns_project_id ON estimation_patterns (project_id);
CREATE INDEX idx_estimation_patterns_task_type ON estimation_patterns (task_type);
CREATE INDEX idx_estimation_patterns_complexity ON estimation_patterns (complexity);
CREATE INDEX idx_estimation_patterns_confidence_score ON estimation_patterns (confidence_score);

CREATE TABLE time_tracking_sessions (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    task_execution_id   UUID NOT NULL REFERENCES task_executions (id) ON DELETE CASCADE,
    session_number      INTEGER NOT NULL CHECK (session_number > 0),
    started_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    ended_at            TIMESTAMPTZ,
    duration_minutes    INTEGER CHECK (duration_minutes >= 0),
    activity_type       VARCHAR(50),
    productivity_rating SMALLINT CHECK (productivity_rating BETWEEN 1 AND 5),
    notes               TEXT,
    metadata            JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT time_tracking_sessions_execution_session_key
        UNIQUE (task_execution_id, session_number),
    CONSTRAINT time_tracking_sessions_ended_after_start CHECK (ended_at >= started_at)
);

CREATE INDEX idx_time_tracking_sessions_task_execution_id
    ON time_tracking_sessions (task_execution_id);
CREATE INDEX idx_time_tracking_sessions_activity_type ON time_tracking_sessions (activity_type);
CREATE INDEX idx_time_tracking_sessions_started_at ON time_tracking_sessions (started_at);

CREATE TABLE estimation_factors (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    factor_name    VARCHAR(255) NOT NULL CHECK (factor_name <> ''),
    description    TEXT,
    impact_type    VARCHAR(20) NOT NULL
                   CHECK (impact_type IN ('multiplier', 'additive', 'percentage')),
    average_impact NUMERIC(10,2),
    metadata       JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT estimation_factors_factor_name_key UNIQUE (factor_name)
);

CREATE TABLE task_execution_factors (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    task_execution_id UUID NOT NULL REFERENCES task_executions (id) ON DELETE CASCADE,
    factor_id         UUID NOT NULL REFERENCES estimation_factors (id) ON DELETE RESTRICT,
    factor_value      NUMERIC(10,2),
    notes             TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT task_execution_factors_task_execution_id_factor_id_key
        UNIQUE (task_execution_id, factor_id)
);

CREATE INDEX idx_task_execution_factors_task_execution_id
    ON task_execution_factors (task_execution_id);
CREATE INDEX idx_task_execution_factors_factor_id ON task_execution_factors (factor_id);

CREATE FUNCTION calculate_execution_metrics()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
BEGIN
    IF NEW.status = 'completed' AND NEW.completed_at IS NULL THEN
        NEW.completed_at := now();
    END IF;

    IF NEW.completed_at IS NOT NULL THEN
        NEW.duration_minutes :=
            round(extract(epoch FROM NEW.completed_at - NEW.started_at) / 60)::INTEGER;
        IF NEW.status IN ('running', 'paused') THEN
            NEW.status := 'completed';
        END IF;
    ELSE
        NEW.duration_minutes := NULL;
    END IF;

    IF NEW.duration_minutes IS NOT NULL AND NEW.estimated_minutes IS NOT NULL THEN
        NEW.variance_minutes := NEW.duration_minutes - NEW.estimated_minutes;
        NEW.variance_percent :=
            round(100.0 * NEW.variance_minutes / NEW.estimated_minutes, 2);
    ELSE
        NEW.variance_minutes := NULL;
        NEW.variance_percent := NULL;
    END IF;

    RETURN NEW;
END;
$$;

CREATE TRIGGER calculate_task_execution_metrics
    BEFORE INSERT OR UPDATE ON task_executions
    FOR EACH ROW EXECUTE FUNCTION calculate_execution_metrics();

CREATE FUNCTION update_estimation_pattern(
    p_project_id       UUID,
    p_task_type        VARCHAR,
    p_complexity       VARCHAR,
    p_duration_minutes INTEGER
)
RETURNS estimation_patterns
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
DECLARE
    v_name    VARCHAR := p_task_type || '_' || p_complexity;
    v_pattern estimation_patterns%ROWTYPE;
    v_count   INTEGER;
    v_delta   NUMERIC;
    v_mean    NUMERIC;
    v_m2      NUMERIC;
BEGIN
    IF p_duration_minutes IS NULL OR p_duration_minutes < 0 THEN
        RAISE EXCEPTION 'duration_minutes must be a number of minutes >= 0, not %', p_duration_minutes
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO estimation_patterns (project_id, pattern_name, task_type, complexity)
    VALUES (p_project_id, v_name, p_task_type, p_complexity)
    ON CONFLICT ON CONSTRAINT estimation_patterns_project_pattern_type_complexity_key DO NOTHING;

    SELECT * INTO STRICT v_pattern
      FROM estimation_patterns
     WHERE project_id = p_project_id
       AND pattern_name = v_name
       AND task_type = p_task_type
       AND complexity = p_complexity
       FOR UPDATE;

    -- Welford's update; the previous sum of squared deviations comes from the stored
    -- sample standard deviation.
    v_count := v_pattern.sample_count + 1;
    v_delta := p_duration_minutes - v_pattern.avg_duration_minutes;
    v_mean  := v_pattern.avg_duration_minutes + v_delta / v_count;
    v_m2    := coalesce(v_pattern.std_deviation, 0) ^ 2 * greatest(v_pattern.sample_count - 1, 0)
               + v_delta * (p_duration_minutes - v_mean);

    UPDATE estimation_patterns
       SET avg_duration_minutes = v_mean,
           std_deviation = CASE WHEN v_count > 1 THEN sqrt(greatest(v_m2, 0) / (v_count - 1)) END,
           sample_count = v_count,
           confidence_score = least(1.0, v_count / 10.0)
     WHERE id = v_pattern.id
    RETURNING * INTO v_pattern;

    RETURN v_pattern;
END;
$$;

CREATE FUNCTION get_recommended_estimate(
    p_project_id UUID,
    p_task_type  VARCHAR,
    p_complexity VARCHAR
)
RETURNS INTEGER
LANGUAGE sql
STABLE
SET search_path = supervisor, public
AS $$
    SELECT round(ep.avg_duration_minutes)::INTEGER
      FROM estimation_patterns AS ep
     WHERE ep.project_id = p_project_id
       AND ep.task_type = p_task_type
       AND ep.complexity = p_complexity
       AND ep.sample_count >= 3
     ORDER BY ep.confidence_score DESC, ep.sample_count DESC, ep.updated_at DESC
     LIMIT 1;
$$;

CREATE TRIGGER update_task_executions_updated_at
    BEFORE UPDATE ON task_executions
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_estimation_patterns_updated_at
    BEFORE UPDATE ON estimation_patterns
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_time_tracking_sessions_updated_at
    BEFORE UPDATE ON time_tracking_sessions
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_estimation_factors_updated_at
    BEFORE UPDATE ON estimation_factors
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE VIEW estimation_accuracy_by_project AS
SELECT
    p.id                                                          AS project_id,
    p.name                                                        AS project_name,
    count(te.id)                                                  AS total_executions,
    round(avg(te.variance_percent), 2)                            AS avg_variance_percent,
    round(stddev_samp(te.variance_percent), 2)                    AS stddev_variance_percent,
    count(te.id) FILTER (WHERE abs(te.variance_percent) <= 10)    AS within_10_percent,
    count(te.id) FILTER (WHERE abs(te.variance_percent) <= 25)    AS within_25_percent,
    count(te.id) FILTER (WHERE te.variance_percent < 0)           AS over_estimated,
    count(te.id) FILTER (WHERE te.variance_percent > 0)           AS under_estimated
FROM projects AS p
LEFT JOIN task_executions AS te
       ON te.project_id = p.id
      AND te.status = 'completed'
      AND te.variance_percent IS NOT NULL
GROUP BY p.id, p.name;

CREATE VIEW task_performance_trends AS
SELECT
    t.id                                AS task_id,
    t.title                             AS task_title,
    t.project_id,
    count(*)                            AS execution_count,
    round(avg(te.duration_minutes), 2)  AS avg_duration,
    min(te.duration_minutes)            AS min_duration,
    max(te.duration_minutes)            AS max_duration,
    round(avg(te.variance_percent), 2)  AS avg_variance_percent,
    sum(te.context_switches)            AS total_context_switches,
    sum(te.interruptions)               AS total_interruptions
FROM tasks AS t
JOIN task_executions AS te ON te.task_id = t.id AND te.status = 'completed'
GROUP BY t.id, t.title, t.project_id
HAVING count(*) > 1;
