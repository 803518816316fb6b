"""slackbot: Slackbot (document 004_9bcff1184c811c83.txt).

The document gives usage examples, not DDL: the columns below are those its examples use
plus the ones migrations/slackbot/0001_tables.sql chose (see that file's leading comment).
It names no index; INDEXES lists the ones the migrations chose, so the catalog test keeps them.
"""

MODULE = "slackbot"

TABLES = {
    "user_sessions": [
        "id", "slack_user_id", "slack_channel_id", "slack_team_id", "current_database",
        "session_context", "preferences", "is_active", "last_activity", "created_at",
        "updated_at",
    ],
    "query_history": [
        "id", "session_id", "original_question", "generated_query", "database_name", "status",
        "execution_time_ms", "row_count", "query_result", "snowflake_query_id", "error_message",
        "created_at", "completed_at",
    ],
    "user_mappings": [
        "id", "slack_user_id", "slack_team_id", "slack_username", "slack_display_name",
        "slack_email", "database_username", "database_role", "default_database", "permissions",
        "is_admin", "is_active", "created_at", "updated_at",
    ],
    "query_cache": [
        "id", "query_hash", "original_query", "normalized_query", "database_name",
        "result_data", "hit_count", "last_hit_at", "is_valid", "invalidated_at",
        "invalidation_reason", "created_at", "expires_at",
    ],
    "audit_logs": [
        "id", "event_type", "event_category", "event_description", "event_data",
        "slack_user_id", "slack_team_id", "slack_channel_id", "session_id", "created_at",
    ],
    # where archive_old_audit_logs(days) moves old audit_logs rows (0003_maintenance)
    "audit_logs_archive": [
        "id", "event_type", "event_category", "event_description", "event_data",
        "slack_user_id", "slack_team_id", "slack_channel_id", "session_id", "created_at",
        "archived_at",
    ],
}

INDEXES = [
    "idx_user_sessions_user_channel_active",
    "idx_user_sessions_team_user",
    "idx_user_sessions_last_activity",
    "idx_query_history_session_id",
    "idx_query_history_created_at",
    "idx_query_history_status",
    "idx_query_history_snowflake_query_id",
    "idx_user_mappings_slack_user_id",
    "idx_user_mappings_database_username",
    "idx_query_cache_expires_at",
    "idx_query_cache_created_at",
    "idx_audit_logs_created_at",
    "idx_audit_logs_event_type",
    "idx_audit_logs_event_category",
    "idx_audit_logs_slack_user_id",
    "idx_audit_logs_session_id",
    "idx_audit_logs_event_data",
    "idx_audit_logs_archive_created_at",
]

VIEWS = [
    "active_sessions",
    "query_performance_metrics",
    "user_activity_summary",
    "cache_efficiency",
]

FUNCTIONS = [
    "update_updated_at_column",
    "cleanup_expired_sessions",
    "cleanup_expired_cache",
    "archive_old_audit_logs",
]

TRIGGERS = [
    "update_user_sessions_updated_at",
    "update_user_mappings_updated_at",
]

EXAMPLE_QUERIES = [
    # "Maintenance Functions" example usage
    "SELECT cleanup_expired_sessions(24)",
    "SELECT cleanup_expired_cache()",
    "SELECT archive_old_audit_logs(90)",
    # "Performance Monitoring"
    "SELECT * FROM query_performance_metrics ORDER BY hour DESC LIMIT 24",
    "SELECT * FROM user_activity_summary ORDER BY last_activity DESC",
    "SELECT * FROM cache_efficiency ORDER BY day DESC LIMIT 7",
    # "Regular Maintenance Tasks" (psql -c)
    "SELECT * FROM query_performance_metrics LIMIT 10",
    # "Built-in Views": active_sessions (named, no query shown)
    "SELECT * FROM active_sessions ORDER BY last_activity DESC",
    # "Custom Migrations": the down_sql as given; the up_sql with IF NOT EXISTS, because
    # preferences is part of user_sessions already (create_user_session() passes it)
    "ALTER TABLE user_sessions DROP COLUMN preferences",
    "ALTER TABLE user_sessions ADD COLUMN IF NOT EXISTS preferences JSONB DEFAULT '{}'",
    # The Python operations the document shows, as the SQL they imply.
    # create_user_session(..., current_database="ANALYTICS", preferences={"theme": "dark"})
    """
    INSERT INTO user_sessions (slack_user_id, slack_channel_id, slack_team_id,
                               current_database, preferences)
    VALUES ('U123', 'C123', 'T123', 'ANALYTICS', '{"theme": "dark"}')
    RETURNING id, is_active
    """,
    # get_active_session("U123", "C123")
    """
    SELECT * FROM user_sessions
    WHERE slack_user_id = 'U123' AND slack_channel_id = 'C123' AND is_active
    ORDER BY last_activity DESC LIMIT 1
    """,
    # update_session_activity(session.id)
    "UPDATE user_sessions SET last_activity = now() "
    "WHERE id = '6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b'",
    # log_query_execution(session_id=session.id, ...)
    """
    WITH s AS (
        INSERT INTO user_sessions (slack_user_id, slack_channel_id, slack_team_id)
        VALUES ('U123456789', 'C123456789', 'T123456789')
        RETURNING id
    )
    INSERT INTO query_history (session_id, original_question, generated_query, database_name,
                               status, execution_time_ms, row_count)
    SELECT id, 'What are our top products?',
           'SELECT product_name, SUM(sales) FROM products GROUP BY product_name',
           'SALES_DB', 'success', 1250, 150
    FROM s
    RETURNING id
    """,
    # update_query_result(query_id=query_log.id, ...)
    """
    UPDATE query_history
    SET status = 'success', query_result = '{"data": [], "columns": []}',
        snowflake_query_id = '01234567-89ab-cdef-0123-456789abcdef', completed_at = now()
    WHERE id = '6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b'
    """,
    # cache_query_result(query_hash="abc123...", ..., expires_at=now + 1 hour)
    """
    INSERT INTO query_cache (query_hash, original_query, normalized_query, result_data,
                             expires_at)
    VALUES ('abc123...', 'SELECT * FROM users', 'select * from users',
            '{"rows": [], "columns": []}', now() + interval '1 hour')
    ON CONFLICT (query_hash) DO UPDATE
    SET original_query = EXCLUDED.original_query, normalized_query = EXCLUDED.normalized_query,
        result_data = EXCLUDED.result_data, expires_at = EXCLUDED.expires_at,
        hit_count = 0, last_hit_at = NULL, is_valid = TRUE, invalidated_at = NULL,
        invalidation_reason = NULL, created_at = now()
    RETURNING id
    """,
    # get_cached_result("abc123...")
    """
    UPDATE query_cache SET hit_count = hit_count + 1, last_hit_at = now()
    WHERE query_hash = 'abc123...' AND is_valid AND expires_at > now()
    RETURNING result_data
    """,
    # log_audit_event(event_type="user_login", event_category="security", ...)
    """
    INSERT INTO audit_logs (event_type, event_category, event_description, slack_user_id,
                            event_data)
    VALUES ('user_login', 'security', 'User logged in successfully', 'U123',
            '{"login_method": "oauth", "ip_address": "192.168.1.1"}')
    """,
    # get_table_stats(): active_sessions, recent_queries_24h
    "SELECT count(*) AS active_sessions FROM user_sessions WHERE is_active",
    "SELECT count(*) AS recent_queries_24h FROM query_history "
    "WHERE created_at >= now() - interval '24 hours'",
    # the maintenance functions' defaults
    "SELECT cleanup_expired_sessions()",
    "SELECT archive_old_audit_logs()",
]
