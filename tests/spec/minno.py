"""Document 000 (Minno): the core module. The keyring table encryption_keys of document 003 is
listed in minno_keyring.py."""

MODULE = "minno"

TABLES = {
    "workspaces": [
        "id", "slack_team_id", "slack_team_name", "notion_workspace_id",
        "created_at", "updated_at",
    ],
    "oauth_tokens": [
        "id", "workspace_id", "provider", "access_token_encrypted", "refresh_token_encrypted",
        "expires_at", "scopes", "metadata", "created_at", "updated_at",
    ],
    "minno_sessions": [
        "id", "workspace_id", "slack_channel_id", "slack_thread_ts", "notion_project_id",
        "notion_task_id", "context", "status", "created_at", "updated_at",
    ],
    "conversation_messages": [
        "id", "session_id", "role", "content", "metadata", "timestamp", "slack_message_ts",
    ],
}

# The first three are the unique indexes of the documented UNIQUE constraints (see 0001_core).
INDEXES = [
    "idx_workspaces_slack_team_id",
    "idx_oauth_tokens_workspace_provider",
    "idx_minno_sessions_slack_thread",
    "idx_oauth_tokens_provider",
    "idx_minno_sessions_workspace_status",
    "idx_minno_sessions_notion_project",
    "idx_minno_sessions_notion_task",
    "idx_minno_sessions_created_at",
    "idx_conversation_messages_session_timestamp",
    "idx_conversation_messages_slack_ts",
]

VIEWS = ["active_sessions_view"]

FUNCTIONS = ["update_updated_at_column"]

# The document has three updated_at triggers but does not name them.
TRIGGERS = [
    "update_workspaces_updated_at",
    "update_oauth_tokens_updated_at",
    "update_minno_sessions_updated_at",
]

_WORKSPACE = "6f1c2b0e-3d4a-4b5c-8d9e-0a1b2c3d4e5f"
_SESSION = "7a2d3c1f-4e5b-4c6d-9e0f-1b2c3d4e5f60"

# "Common Queries" of each table and the "Query Optimization Tips" (whose GOOD and BETTER
# examples are the same query, listed once). "Check index usage" is fixed: pg_stat_user_indexes
# has relname / indexrelname, not tablename / indexname, and the module's schema is minno, not
# public. Not listed: "Find slow queries" (pg_stat_statements may be absent), GRANT, ANALYZE
# and REINDEX DATABASE (maintenance, REINDEX DATABASE cannot run in a transaction) and the
# optional CREATE TABLE audit_log example (DDL).
EXAMPLE_QUERIES = [
    # workspaces
    "SELECT * FROM workspaces WHERE slack_team_id = 'T1234567890'",
    "SELECT * FROM workspaces WHERE notion_workspace_id IS NOT NULL",
    # oauth_tokens
    f"SELECT * FROM oauth_tokens WHERE workspace_id = '{_WORKSPACE}' AND provider = 'slack'",
    f"SELECT provider, expires_at FROM oauth_tokens WHERE workspace_id = '{_WORKSPACE}'"
    " ORDER BY provider",
    # minno_sessions
    f"SELECT * FROM minno_sessions WHERE workspace_id = '{_WORKSPACE}' AND status = 'active'"
    " ORDER BY updated_at DESC",
    "SELECT * FROM minno_sessions WHERE slack_channel_id = 'C1234567890'"
    " AND slack_thread_ts = '1698765432.123456'",
    "SELECT * FROM minno_sessions ORDER BY created_at DESC LIMIT 10",
    # conversation_messages
    f"SELECT * FROM conversation_messages WHERE session_id = '{_SESSION}' ORDER BY timestamp ASC",
    f"SELECT * FROM conversation_messages WHERE session_id = '{_SESSION}'"
    " ORDER BY timestamp DESC LIMIT 10",
    f"SELECT * FROM conversation_messages WHERE session_id = '{_SESSION}' AND role = 'user'"
    " ORDER BY timestamp ASC",
    # Query Optimization Tips
    f"SELECT * FROM minno_sessions WHERE workspace_id = '{_WORKSPACE}' AND status = 'active'",
    "SELECT * FROM minno_sessions WHERE status = 'active'",
    # Performance Monitoring: index usage (fixed, see above)
    "SELECT schemaname, relname AS tablename, indexrelname AS indexname,"
    " idx_scan, idx_tup_read, idx_tup_fetch"
    " FROM pg_stat_user_indexes WHERE schemaname = 'minno' ORDER BY idx_scan DESC",
]
