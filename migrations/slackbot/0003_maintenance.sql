-- slackbot: the document's maintenance functions cleanup_expired_sessions(hours),
-- cleanup_expired_cache() and archive_old_audit_logs(days), and the audit_logs_archive table
-- that archive_old_audit_logs() moves rows into.
--
-- The document gives only their names, one-line purposes and the calls
-- `SELECT cleanup_expired_sessions(24)`, `SELECT cleanup_expired_cache()` and
-- `SELECT archive_old_audit_logs(90)` (scheduled with pg_cron or an external scheduler).
-- What they do is defined here:
-- * Each returns the number of rows it handled as INTEGER, is STRICT (a NULL argument does
--   nothing and returns NULL), rejects a negative argument with SQLSTATE 22023
--   (invalid_parameter_value), and, when it changed anything, records one audit_logs event
--   (event_category 'system') with the count in event_data, so a scheduled run that found
--   nothing leaves no noise.
-- * cleanup_expired_sessions(hours INTEGER DEFAULT 24): a session expires after `hours`
--   hours without activity. Active sessions whose last_activity is older than now() minus
--   `hours` hours are DEACTIVATED (is_active = FALSE; the trigger sets updated_at), not
--   deleted: deleting them would cascade to their query_history. hours = 0 deactivates every
--   active session last active before the current transaction started. Audit event
--   'session_cleanup'.
-- * cleanup_expired_cache(): DELETEs the query_cache entries that can no longer be served,
--   expires_at <= now() or is_valid = FALSE (invalidated). Audit event 'cache_cleanup' with
--   the number of entries removed and their total hit_count.
-- * archive_old_audit_logs(days INTEGER DEFAULT 90): "archive" means MOVE: audit_logs rows
--   with created_at older than now() minus `days` days are deleted from audit_logs and
--   inserted, unchanged (same id and created_at), into audit_logs_archive, in one statement,
--   so a row is never lost nor in both tables; archived_at records when. Returns the number
--   of rows moved. Rows of every category and severity are archived (nothing is deleted, so
--   nothing needs exempting); the 'audit_log_archive' event it then writes is new and stays
--   in audit_logs. Purging audit_logs_archive itself is left to the operator's retention
--   policy (the document names none).
-- * audit_logs_archive has audit_logs' columns and types plus archived_at TIMESTAMPTZ NOT
--   NULL DEFAULT now(); primary key id; indexed on created_at. It has no defaults for the
--   moved columns and no foreign keys: it only ever receives rows from audit_logs.
-- depends: 0002_views

SET LOCAL search_path = slackbot, public;

CREATE TABLE audit_logs_archive (
    id UUID PRIMARY KEY,
    event_type VARCHAR(100) NOT NULL,
    event_category VARCHAR(50) NOT NULL,
    event_description TEXT NOT NULL,
    event_data JSONB NOT NULL,
    slack_user_id VARCHAR(64),
    slack_team_id VARCHAR(64),
    slack_channel_id VARCHAR(64),
    session_id UUID,
    created_at TIMESTAMPTZ NOT NULL,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_audit_logs_archive_created_at ON audit_logs_archive (created_at);

CREATE FUNCTION cleanup_expired_sessions(hours INTEGER DEFAULT 24) RETURNS INTEGER
    LANGUAGE plpgsql
    STRICT
    SET search_path = slackbot, public
AS $$
DECLARE
    deactivated INTEGER;
BEGIN
    IF hours < 0 THEN
        RAISE EXCEPTION 'cleanup_expired_sessions: hours must be >= 0, got %', hours
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    UPDATE user_sessions
    SET is_active = FALSE
    WHERE is_active
      AND last_activity < now() - make_interval(hours => hours);
    GET DIAGNOSTICS deactivated = ROW_COUNT;

    IF deactivated > 0 THEN
        INSERT INTO audit_logs (event_type, event_category, event_description, event_data)
        VALUES ('session_cleanup', 'system',
                format('Deactivated %s session(s) idle for more than %s hour(s)', deactivated, hours),
                jsonb_build_object('sessions_deactivated', deactivated, 'hours', hours));
    END IF;

    RETURN deactivated;
END;
$$;

CREATE FUNCTION cleanup_expired_cache() RETURNS INTEGER
    LANGUAGE plpgsql
    SET search_path = slackbot, public
AS $$
DECLARE
    removed INTEGER;
    removed_hits BIGINT;
BEGIN
    WITH deleted AS (
        DELETE FROM query_cache
        WHERE expires_at <= now() OR NOT is_valid
        RETURNING hit_count
    )
    SELECT count(*), coalesce(sum(hit_count), 0) INTO removed, removed_hits FROM deleted;

    IF removed > 0 THEN
        INSERT INTO audit_logs (event_type, event_category, event_description, event_data)
        VALUES ('cache_cleanup', 'system',
                format('Removed %s expired or invalidated cache entries', removed),
                jsonb_build_object('entries_removed', removed, 'hits_of_removed', removed_hits));
    END IF;

    RETURN removed;
END;
$$;

CREATE FUNCTION archive_old_audit_logs(days INTEGER DEFAULT 90) RETURNS INTEGER
    LANGUAGE plpgsql
    STRICT
    SET search_path = slackbot, public
AS $$
DECLARE
    archived INTEGER;
BEGIN
    IF days < 0 THEN
        RAISE EXCEPTION 'archive_old_audit_logs: days must be >= 0, got %', days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    WITH moved AS (
        DELETE FROM audit_logs
        WHERE created_at < now() - make_interval(days => days)
        RETURNING id, event_type, event_category, event_description, event_data,
                  slack_user_id, slack_team_id, slack_channel_id, session_id, created_at
    )
    INSERT INTO audit_logs_archive (id, event_type, event_category, event_description, event_data,
                                    slack_user_id, slack_team_id, slack_channel_id, session_id,
                                    created_at)
    SELECT id, event_type, event_category, event_description, event_data,
           slack_user_id, slack_team_id, slack_channel_id, session_id, created_at
    FROM moved;
    GET DIAGNOSTICS archived = ROW_COUNT;

    IF archived > 0 THEN
        INSERT INTO audit_logs (event_type, event_category, event_description, event_data)
        VALUES ('audit_log_archive', 'system',
                format('Moved %s audit log entries older than %s day(s) to audit_logs_archive',
                       archived, days),
                jsonb_build_object('rows_archived', archived, 'days', days));
    END IF;

    RETURN archived;
END;
$$;
