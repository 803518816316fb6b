"""Document 001 (Micro Chatbot Service)."""

MODULE = "chatbot"

TABLES = {
    "conversations": ["id", "user_id", "created_at", "updated_at", "metadata"],
    "messages": ["id", "conversation_id", "role", "content", "created_at", "metadata"],
}

INDEXES = [
    "idx_conversations_user_id",
    "idx_conversations_created_at",
    "idx_messages_conversation_id",
    "idx_messages_role",
    # "Additional indexes for production"
    "idx_conversations_metadata",
    "idx_messages_metadata",
    "idx_messages_content_search",
]

VIEWS = []

FUNCTIONS = ["update_updated_at_column"]

# Not in the document, which has updated_at but no trigger (see 0001_conversations).
TRIGGERS = ["update_conversations_updated_at"]

_CONVERSATION = "550e8400-e29b-41d4-a716-446655440000"

# "Common Queries", "Check table sizes" and the "Monitoring Queries". Changes:
# - "Add Message to Conversation" first inserts its conversation in a data-modifying CTE: the
#   schema is empty and the foreign key would reject the message otherwise.
# - "Check table sizes" looks at schema chatbot, not public.
# - "Table Statistics": pg_stat_user_tables has relname, not tablename.
# Not listed: the retention policy's CREATE TABLE conversations_archive AS ... and the
# partitioning example (DDL; messages is not partitioned), its DELETE (the same as "Delete Old
# Conversations"), VACUUM (cannot run in a transaction), REINDEX TABLE (maintenance) and the
# "Example Data" INSERTs (seed data).
EXAMPLE_QUERIES = [
    "INSERT INTO conversations (user_id, metadata)"
    " VALUES ('user123', '{\"source\": \"web-app\"}'::jsonb) RETURNING *",
    "SELECT * FROM conversations WHERE user_id = 'user123' ORDER BY created_at DESC LIMIT 50",
    f"""SELECT
  c.*,
  json_agg(
    json_build_object(
      'id', m.id,
      'role', m.role,
      'content', m.content,
      'createdAt', m.created_at
    ) ORDER BY m.created_at ASC
  ) as messages
FROM conversations c
LEFT JOIN messages m ON m.conversation_id = c.id
WHERE c.id = '{_CONVERSATION}'
GROUP BY c.id""",
    f"""WITH c AS (
  INSERT INTO conversations (id, user_id) VALUES ('{_CONVERSATION}', 'user123') RETURNING id
)
INSERT INTO messages (conversation_id, role, content)
SELECT c.id, 'user', 'What is my order status?' FROM c
RETURNING *""",
    f"SELECT * FROM messages WHERE conversation_id = '{_CONVERSATION}'"
    " ORDER BY created_at DESC LIMIT 10",
    "DELETE FROM conversations WHERE created_at < NOW() - INTERVAL '90 days'",
    f"UPDATE conversations SET updated_at = NOW() WHERE id = '{_CONVERSATION}'",
    """SELECT m.*, c.user_id
FROM messages m
JOIN conversations c ON c.id = m.conversation_id
WHERE m.content ILIKE '%order%'
  AND m.role = 'user'
ORDER BY m.created_at DESC
LIMIT 20""",
    """SELECT
  c.id,
  c.user_id,
  COUNT(m.id) as message_count,
  MIN(m.created_at) as first_message,
  MAX(m.created_at) as last_message
FROM conversations c
LEFT JOIN messages m ON m.conversation_id = c.id
WHERE c.user_id = 'user123'
GROUP BY c.id, c.user_id""",
    # Maintenance: table sizes
    """SELECT
  schemaname,
  tablename,
  pg_size_pretty(pg_total_relation_size(schemaname||'.'||tablename)) AS size
FROM pg_tables
WHERE schemaname = 'chatbot'
ORDER BY pg_total_relation_size(schemaname||'.'||tablename) DESC""",
    # Monitoring Queries
    "SELECT count(*) FROM pg_stat_activity",
    """SELECT pid, now() - query_start as duration, query
FROM pg_stat_activity
WHERE state = 'active'
  AND now() - query_start > interval '5 seconds'""",
    """SELECT schemaname, relname AS tablename, n_live_tup, n_dead_tup
FROM pg_stat_user_tables
ORDER BY n_live_tup DESC""",
]
