"""assistant: AI Assistant Platform (document 002_4be4f1a339a0167f.txt)."""

MODULE = "assistant"

TABLES = {
    "user_tokens": [
        "user_id", "google_access_token", "google_refresh_token", "google_expires_at",
        "google_token_type", "google_scope", "slack_access_token", "slack_refresh_token",
        "slack_expires_at", "slack_scope", "slack_team_id", "slack_user_id",
        "created_at", "updated_at",
    ],
    "oauth_tokens": [
        "session_id", "access_token", "refresh_token", "expires_at", "token_type", "scope",
        "created_at", "updated_at",
    ],
    "sessions": [
        "session_id", "user_id", "created_at", "expires_at", "last_activity",
        "conversation_history", "tool_calls", "tool_results", "slack_context",
        "updated_at",  # used by the document's updateSession(), missing from its DDL: added
    ],
    "confirmations": [
        "id", "session_id", "user_id", "confirmation_type", "confirmation_data", "status",
        "created_at", "expires_at", "resolved_at",
    ],
}

INDEXES = [
    "idx_user_tokens_google_expires",
    "idx_user_tokens_slack_expires",
    "idx_user_tokens_slack_team",
    "idx_sessions_user_id",
    "idx_sessions_expires_at",
    "idx_sessions_last_activity",
    "idx_confirmations_session_id",
    "idx_confirmations_user_id",
    "idx_confirmations_status",
    "idx_confirmations_expires_at",
]

VIEWS = []

FUNCTIONS = ["update_updated_at_column"]

TRIGGERS = [
    "update_sessions_updated_at",
    "update_oauth_tokens_updated_at",
    "update_user_tokens_updated_at",
]

EXAMPLE_QUERIES = [
    # storeUserTokens(). The token placeholders are well-formed encrypted fields (minno/0007
    # refuses plaintext) under a data key 4242 made first; they are not meant to decrypt.
    """
    INSERT INTO minno.encryption_keys (key_number, key_name, encrypted_key) OVERRIDING SYSTEM VALUE
    VALUES (4242, 'example-key', 'd3JhcHBlZC0x');
    INSERT INTO user_tokens (
      user_id, google_access_token, google_refresh_token, google_expires_at,
      google_token_type, google_scope, slack_access_token, slack_refresh_token,
      slack_expires_at, slack_scope, slack_team_id, slack_user_id,
      created_at, updated_at
    ) VALUES ('U123', 'AQAAEJIBAQEBAQEBAQEBAQFnb29nbGUtYWNjZXNzLi4u', 'AQAAEJICAgICAgICAgICAgJnb29nbGUtcmVmcmVzaC4u',
              '2030-01-01 00:00:00', 'Bearer', 'https://www.googleapis.com/auth/calendar',
              'AQAAEJIDAwMDAwMDAwMDAwNzbGFjay1hY2Nlc3MuLi4u', 'AQAAEJIEBAQEBAQEBAQEBARzbGFjay1yZWZyZXNoLi4u',
              '2030-01-01 00:00:00', 'chat:write', 'T123', 'U456',
              '2025-01-01 00:00:00', '2025-01-01 00:00:00')
    ON CONFLICT (user_id) DO UPDATE SET
      google_access_token = EXCLUDED.google_access_token,
      google_refresh_token = EXCLUDED.google_refresh_token,
      google_expires_at = EXCLUDED.google_expires_at,
      google_token_type = EXCLUDED.google_token_type,
      google_scope = EXCLUDED.google_scope,
      slack_access_token = EXCLUDED.slack_access_token,
      slack_refresh_token = EXCLUDED.slack_refresh_token,
      slack_expires_at = EXCLUDED.slack_expires_at,
      slack_scope = EXCLUDED.slack_scope,
      slack_team_id = EXCLUDED.slack_team_id,
      slack_user_id = EXCLUDED.slack_user_id,
      updated_at = CURRENT_TIMESTAMP
    """,
    # getUserTokens()
    "SELECT * FROM user_tokens WHERE user_id = 'U123'",
    # createSession()
    """
    INSERT INTO sessions (
      session_id, user_id, expires_at, last_activity,
      conversation_history, tool_calls, tool_results, slack_context
    ) VALUES ('sess-1', 'U123', '2030-01-01 00:00:00', '2025-01-01 00:00:00',
              '[]', '[]', '[]', '{"channel": "C123", "thread_ts": "1700000000.000100"}')
    """,
    # updateSession() with every optional SET clause
    """
    UPDATE sessions
    SET last_activity = '2025-01-01 00:05:00',
        conversation_history = '[{"role": "user", "content": "hello"}]',
        tool_calls = '[]',
        tool_results = '[]',
        slack_context = '{"channel": "C123"}',
        updated_at = CURRENT_TIMESTAMP
    WHERE session_id = 'sess-1'
    """,
    # storeConfirmation(); confirmations.session_id references sessions, so against the
    # empty schema the session is created in the same statement
    """
    WITH s AS (
      INSERT INTO sessions (session_id, user_id, expires_at)
      VALUES ('sess-1', 'U123', '2030-01-01 00:00:00')
      RETURNING session_id
    )
    INSERT INTO confirmations (
      session_id, user_id, confirmation_type, confirmation_data,
      status, expires_at
    ) SELECT s.session_id, 'U123', 'send_email', '{"to": "a@example.com"}',
             'pending', '2030-01-01 00:00:00' FROM s
    RETURNING id
    """,
    # resolveConfirmation()
    """
    UPDATE confirmations
    SET status = 'confirmed', resolved_at = CURRENT_TIMESTAMP
    WHERE id = 1
    """,
]
