-- slackbot: the document's four monitoring views, active_sessions, query_performance_metrics,
-- user_activity_summary and cache_efficiency.
--
-- The document names the views, describes each in one line and queries them with
-- `ORDER BY hour DESC LIMIT 24`, `ORDER BY last_activity DESC` and `ORDER BY day DESC LIMIT 7`;
-- the columns below are choices. The views carry no ORDER BY: callers order, as the
-- document's queries do. Time buckets use date_trunc() on TIMESTAMPTZ, so hours and days
-- follow the session's TimeZone (set it to UTC for reports that must agree across hosts).
-- * active_sessions ("current active user sessions with user info"): the sessions with
--   is_active, their identifying and activity columns (the JSON state session_context and
--   preferences stays in the table, so the view does not pin those columns), the Slack and
--   warehouse identity from user_mappings (LEFT JOIN on team and user: unmapped users are
--   listed with NULLs) and query_count / last_query_at from query_history.
-- * query_performance_metrics ("hourly query performance statistics"): per hour of
--   query_history.created_at over the last 7 days (a bound keeps the view cheap; the
--   document reads at most the last 24 hours): total, successful ('success'), failed
--   ('error' or 'timeout'), cancelled and still pending/running queries, success_rate
--   (successful / finished, where finished = success, error or timeout; NULL when none
--   finished), average, median, p95 and max
--   execution_time_ms (NULL times ignored) and the average row_count.
-- * user_activity_summary ("user activity and query statistics"): one row per Slack user
--   (slack_team_id, slack_user_id) that has at least one session, with their user_mappings
--   names when mapped: session counts, query counts, average execution time, first_seen_at,
--   last_query_at and last_activity (the latest of the sessions' last_activity and the last
--   query, never NULL, so `ORDER BY last_activity DESC` lists the most recent users first).
--   Sessions and queries are aggregated separately, so counts do not multiply.
-- * cache_efficiency ("cache hit rates and efficiency metrics"): per day of
--   query_cache.created_at: entries created, total and average hits, hit_rate = hits /
--   (hits + entries created), each entry having been created by one miss, and the valid,
--   expired and invalidated entries. It describes the entries still in query_cache:
--   cleanup_expired_cache() (0003) deletes expired and invalidated entries, after which
--   their day no longer counts them (the count and hits of each sweep are kept in the
--   'cache_cleanup' audit_logs event).
-- depends: 0001_tables

SET LOCAL search_path = slackbot, public;

CREATE VIEW active_sessions AS
SELECT
    us.id,
    us.slack_user_id,
    us.slack_channel_id,
    us.slack_team_id,
    us.current_database,
    us.created_at,
    us.last_activity,
    um.slack_username,
    um.slack_display_name,
    um.database_username,
    um.is_admin,
    q.query_count,
    q.last_query_at
FROM user_sessions AS us
LEFT JOIN user_mappings AS um
    ON um.slack_team_id = us.slack_team_id AND um.slack_user_id = us.slack_user_id
CROSS JOIN LATERAL (
    SELECT count(*) AS query_count, max(qh.created_at) AS last_query_at
    FROM query_history AS qh
    WHERE qh.session_id = us.id
) AS q
WHERE us.is_active;

CREATE VIEW query_performance_metrics AS
SELECT
    date_trunc('hour', created_at) AS hour,
    count(*) AS total_queries,
    count(*) FILTER (WHERE status = 'success') AS successful_queries,
    count(*) FILTER (WHERE status IN ('error', 'timeout')) AS failed_queries,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled_queries,
    count(*) FILTER (WHERE status IN ('pending', 'running')) AS pending_queries,
    round(
        count(*) FILTER (WHERE status = 'success')::numeric
        / NULLIF(count(*) FILTER (WHERE status IN ('success', 'error', 'timeout')), 0),
        4
    ) AS success_rate,
    round(avg(execution_time_ms), 2) AS avg_execution_time_ms,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time_ms) AS median_execution_time_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time_ms) AS p95_execution_time_ms,
    max(execution_time_ms) AS max_execution_time_ms,
    round(avg(row_count), 2) AS avg_row_count
FROM query_history
WHERE created_at >= now() - interval '7 days'
GROUP BY date_trunc('hour', created_at);

CREATE VIEW user_activity_summary AS
WITH sessions AS (
    SELECT
        slack_team_id,
        slack_user_id,
        count(*) AS total_sessions,
        count(*) FILTER (WHERE is_active) AS active_sessions,
        min(created_at) AS first_seen_at,
        max(last_activity) AS last_session_activity
    FROM user_sessions
    GROUP BY slack_team_id, slack_user_id
),
queries AS (
    SELECT
        us.slack_team_id,
        us.slack_user_id,
        count(*) AS total_queries,
        count(*) FILTER (WHERE qh.status = 'success') AS successful_queries,
        count(*) FILTER (WHERE qh.status IN ('error', 'timeout')) AS failed_queries,
        round(avg(qh.execution_time_ms), 2) AS avg_execution_time_ms,
        max(qh.created_at) AS last_query_at
    FROM query_history AS qh
    JOIN user_sessions AS us ON us.id = qh.session_id
    GROUP BY us.slack_team_id, us.slack_user_id
)
SELECT
    s.slack_team_id,
    s.slack_user_id,
    um.slack_username,
    um.slack_display_name,
    um.is_active AS mapping_is_active,
    s.total_sessions,
    s.active_sessions,
    coalesce(q.total_queries, 0) AS total_queries,
    coalesce(q.successful_queries, 0) AS successful_queries,
    coalesce(q.failed_queries, 0) AS failed_queries,
    q.avg_execution_time_ms,
    s.first_seen_at,
    q.last_query_at,
    greatest(s.last_session_activity, q.last_query_at) AS last_activity
FROM sessions AS s
LEFT JOIN queries AS q
    ON q.slack_team_id = s.slack_team_id AND q.slack_user_id = s.slack_user_id
LEFT JOIN user_mappings AS um
    ON um.slack_team_id = s.slack_team_id AND um.slack_user_id = s.slack_user_id;

CREATE VIEW cache_efficiency AS
SELECT
    date_trunc('day', created_at) AS day,
    count(*) AS total_entries,
    sum(hit_count) AS total_hits,
    round(avg(hit_count), 2) AS avg_hits_per_entry,
    round(sum(hit_count)::numeric / (sum(hit_count) + count(*)), 4) AS hit_rate,
    count(*) FILTER (WHERE is_valid AND expires_at > now()) AS valid_entries,
    count(*) FILTER (WHERE expires_at <= now()) AS expired_entries,
    count(*) FILTER (WHERE NOT is_valid) AS invalidated_entries
FROM query_cache
GROUP BY date_trunc('day', created_at);
