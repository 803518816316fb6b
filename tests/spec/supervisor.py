"""supervisor-service (document 003, its migrations 001-004): migrations/supervisor/.

The document lists indexed columns without index names; the names below are the ones the
migrations chose (idx_<table>_<column>, see their leading comments). Its triggers have no names
either: update_<table>_updated_at, calculate_task_execution_metrics, plus the migrations' own
track_secret_access and check_port_*_port_in_range. The keyring encryption_keys is in the minno
module (tests/spec/minno_keyring.py).
"""

MODULE = "supervisor"

TABLES = {
    # 001
    "projects": ["id", "name", "path", "description", "status", "metadata", "created_at", "updated_at"],
    "epics": ["id", "project_id", "epic_id", "title", "description", "status", "priority", "estimated_hours",
              "actual_hours", "complexity", "dependencies", "metadata", "created_at", "updated_at",
              "completed_at"],
    "issues": ["id", "project_id", "epic_id", "issue_number", "title", "description", "status", "priority",
               "labels", "assignee", "github_id", "github_url", "metadata", "created_at", "updated_at",
               "closed_at"],
    "tasks": ["id", "project_id", "epic_id", "issue_id", "title", "description", "status", "order_index",
              "estimated_minutes", "actual_minutes", "metadata", "created_at", "updated_at", "completed_at"],
    "service_status": ["id", "project_id", "service_name", "status", "last_check", "response_time_ms",
                       "error_message", "metadata", "created_at", "updated_at"],
    "comments": ["id", "issue_id", "task_id", "author", "content", "github_id", "metadata", "created_at",
                 "updated_at"],
    # 002 (encryption_keys: minno)
    "secrets": ["id", "project_id", "key_name", "encrypted_value", "encryption_key_id", "secret_type",
                "description", "metadata", "last_accessed_at", "access_count", "expires_at", "created_at",
                "updated_at"],
    "secret_access_log": ["id", "secret_id", "accessed_by", "access_type", "success", "error_message",
                          "ip_address", "metadata", "accessed_at"],
    "secret_rotation_schedule": ["id", "secret_id", "rotation_interval_days", "last_rotation_at",
                                 "next_rotation_at", "auto_rotate", "notification_days", "metadata",
                                 "created_at", "updated_at"],
    "secret_templates": ["id", "template_name", "secret_type", "description", "validation_pattern",
                         "rotation_interval_days", "metadata", "created_at", "updated_at"],
    # 003
    "port_ranges": ["id", "range_name", "start_port", "end_port", "description", "is_active", "metadata",
                    "created_at", "updated_at"],
    "port_allocations": ["id", "project_id", "port_range_id", "port_number", "service_name", "service_type",
                         "status", "process_id", "hostname", "protocol", "metadata", "allocated_at",
                         "last_used_at", "released_at", "created_at", "updated_at"],
    "port_health_checks": ["id", "port_allocation_id", "check_type", "status", "response_time_ms",
                           "error_message", "metadata", "checked_at"],
    "port_reservations": ["id", "project_id", "port_range_id", "port_number", "service_name", "reserved_by",
                          "expires_at", "metadata", "created_at", "updated_at"],
    # 004
    "task_executions": ["id", "task_id", "project_id", "execution_number", "started_at", "completed_at",
                        "duration_minutes", "estimated_minutes", "variance_minutes", "variance_percent",
                        "status", "complexity", "context_switches", "interruptions", "blockers", "notes",
                        "metadata", "created_at", "updated_at"],
    "estimation_patterns": ["id", "project_id", "pattern_name", "task_type", "complexity",
                            "avg_duration_minutes", "std_deviation", "sample_count", "confidence_score",
                            "factors", "metadata", "created_at", "updated_at"],
    "time_tracking_sessions": ["id", "task_execution_id", "session_number", "started_at", "ended_at",
                               "duration_minutes", "activity_type", "productivity_rating", "notes", "metadata",
                               "created_at", "updated_at"],
    "estimation_factors": ["id", "factor_name", "description", "impact_type", "average_impact", "metadata",
                           "created_at", "updated_at"],
    "task_execution_factors": ["id", "task_execution_id", "factor_id", "factor_value", "notes", "created_at"],
    # views, with the fields the document lists
    "secrets_expiring_soon": ["id", "project_id", "key_name", "secret_type", "expires_at", "time_until_expiry",
                              "project_name"],
    "secrets_needing_rotation": ["id", "project_id", "key_name", "secret_type", "next_rotation_at",
                                 "time_until_rotation", "auto_rotate", "project_name"],
    "port_range_utilization": ["range_id", "range_name", "start_port", "end_port", "total_ports",
                               "allocated_ports", "released_ports", "reserved_ports", "utilization_percent"],
    "active_port_allocations": ["id", "port_number", "service_name", "service_type", "status", "hostname",
                                "protocol", "allocated_at", "last_used_at", "project_name", "range_name"],
    "estimation_accuracy_by_project": ["project_id", "project_name", "total_executions", "avg_variance_percent",
                                       "stddev_variance_percent", "within_10_percent", "within_25_percent",
                                       "over_estimated", "under_estimated"],
    "task_performance_trends": ["task_id", "task_title", "project_id", "execution_count", "avg_duration",
                                "min_duration", "max_duration", "avg_variance_percent", "total_context_switches",
                                "total_interruptions"],
}

INDEXES = [
    # 001
    "idx_projects_name", "idx_projects_status",
    "idx_epics_project_id", "idx_epics_epic_id", "idx_epics_status", "idx_epics_priority",
    "idx_issues_project_id", "idx_issues_epic_id", "idx_issues_status", "idx_issues_priority",
    "idx_issues_github_id", "idx_issues_labels",
    "idx_tasks_project_id", "idx_tasks_epic_id", "idx_tasks_issue_id", "idx_tasks_status", "idx_tasks_order_index",
    "idx_service_status_project_id", "idx_service_status_status", "idx_service_status_last_check",
    "idx_comments_issue_id", "idx_comments_task_id", "idx_comments_created_at",
    # 002
    "idx_secrets_project_id", "idx_secrets_key_name", "idx_secrets_encryption_key_id", "idx_secrets_secret_type",
    "idx_secrets_expires_at", "idx_secrets_project_key_name", "idx_secrets_global_key_name",
    "idx_secret_access_log_secret_id", "idx_secret_access_log_accessed_by", "idx_secret_access_log_accessed_at",
    "idx_secret_access_log_success",
    "idx_secret_rotation_schedule_next_rotation_at", "idx_secret_rotation_schedule_auto_rotate",
    # 003
    "idx_port_ranges_is_active", "idx_port_ranges_start_end",
    "idx_port_allocations_project_id", "idx_port_allocations_port_number", "idx_port_allocations_service_name",
    "idx_port_allocations_status", "idx_port_allocations_hostname",
    "idx_port_allocations_active_port",  # the unique (port_number, hostname, protocol), active rows only
    "idx_port_health_checks_port_allocation_id", "idx_port_health_checks_status", "idx_port_health_checks_checked_at",
    "idx_port_reservations_project_id", "idx_port_reservations_port_number", "idx_port_reservations_expires_at",
    # 004
    "idx_task_executions_task_id", "idx_task_executions_project_id", "idx_task_executions_status",
    "idx_task_executions_started_at", "idx_task_executions_complexity",
    "idx_estimation_patterns_project_id", "idx_estimation_patterns_task_type", "idx_estimation_patterns_complexity",
    "idx_estimation_patterns_confidence_score",
    "estimation_patterns_project_pattern_type_complexity_key",  # the documented UNIQUE
    "idx_time_tracking_sessions_task_execution_id", "idx_time_tracking_sessions_activity_type",
    "idx_time_tracking_sessions_started_at",
    "idx_task_execution_factors_task_execution_id", "idx_task_execution_factors_factor_id",
    "task_execution_factors_task_execution_id_factor_id_key",  # the documented UNIQUE
]

VIEWS = [
    "secrets_expiring_soon", "secrets_needing_rotation",
    "port_range_utilization", "active_port_allocations",
    "estimation_accuracy_by_project", "task_performance_trends",
]

FUNCTIONS = [
    "update_updated_at_column",
    "record_secret_access",
    "find_available_port", "allocate_port", "release_port", "cleanup_expired_reservations", "check_port_in_range",
    "calculate_execution_metrics", "update_estimation_pattern", "get_recommended_estimate",
]

TRIGGERS = [
    "update_projects_updated_at", "update_epics_updated_at", "update_issues_updated_at", "update_tasks_updated_at",
    "update_service_status_updated_at", "update_comments_updated_at",
    "update_secrets_updated_at", "update_secret_rotation_schedule_updated_at", "update_secret_templates_updated_at",
    "track_secret_access",
    "update_port_ranges_updated_at", "update_port_allocations_updated_at", "update_port_reservations_updated_at",
    "check_port_allocations_port_in_range", "check_port_reservations_port_in_range",
    "calculate_task_execution_metrics",
    "update_task_executions_updated_at", "update_estimation_patterns_updated_at",
    "update_time_tracking_sessions_updated_at", "update_estimation_factors_updated_at",
]

EXAMPLE_QUERIES = [
    # "Query helpers" example: createProject / getProjectByName
    "INSERT INTO projects (name, path, description) "
    "VALUES ('my-project', '/path/to/project', 'My awesome project') RETURNING *",
    "SELECT * FROM projects WHERE name = 'my-project'",
    # the views
    "SELECT * FROM secrets_expiring_soon",
    "SELECT * FROM secrets_needing_rotation",
    "SELECT * FROM port_range_utilization",
    "SELECT * FROM active_port_allocations",
    "SELECT * FROM estimation_accuracy_by_project",
    "SELECT * FROM task_performance_trends",
    # the functions, with literal arguments
    "SELECT find_available_port(id, 'localhost', 'tcp') FROM port_ranges WHERE range_name = 'mcp-servers'",
    "SELECT allocate_port(p.id, r.id, 'consilio-mcp', 'mcp', 'localhost', 'tcp') "
    "FROM projects AS p CROSS JOIN port_ranges AS r WHERE p.name = 'consilio' AND r.range_name = 'mcp-servers'",
    "SELECT release_port(8100, 'localhost', 'tcp')",
    "SELECT release_port(8100, 'localhost')",
    "SELECT cleanup_expired_reservations()",
    "SELECT update_estimation_pattern(id, 'api_endpoint', 'moderate', 45) FROM projects WHERE name = 'consilio'",
    "SELECT get_recommended_estimate('00000000-0000-0000-0000-000000000001', 'api_endpoint', 'moderate')",
    # port allocation end to end: lowest free port, reuse after release, protocol-aware release,
    # reservations, idempotence, exhaustion
    """DO $$
DECLARE
    v_project UUID;
    v_range   UUID;
    v_port    INTEGER;
BEGIN
    INSERT INTO projects (name, path) VALUES ('consilio', '/srv/consilio') RETURNING id INTO v_project;
    -- no cooldown here, so a released port is reused at once (tests/test_ports.py covers the cooldown)
    INSERT INTO port_ranges (range_name, start_port, end_port, cooldown_seconds) VALUES ('mcp-servers', 8100, 8102, 0)
        RETURNING id INTO v_range;
    ASSERT find_available_port(v_range, 'localhost', 'tcp') = 8100;
    ASSERT allocate_port(v_project, v_range, 'api', 'api', 'localhost', 'tcp') = 8100;
    ASSERT allocate_port(v_project, v_range, 'api', 'api', 'localhost', 'tcp') = 8100;  -- idempotent
    ASSERT allocate_port(v_project, v_range, 'dns', 'dns', 'localhost', 'udp') = 8100;  -- other protocol
    ASSERT allocate_port(v_project, v_range, 'web', 'api', 'localhost', 'tcp') = 8101;
    ASSERT release_port(8100, 'localhost', 'udp');
    ASSERT (SELECT status FROM port_allocations WHERE port_number = 8100 AND protocol = 'tcp') = 'allocated';
    ASSERT release_port(8100, 'localhost', 'tcp');
    ASSERT NOT release_port(8100, 'localhost', 'tcp');
    ASSERT allocate_port(v_project, v_range, 'ws', 'websocket', 'localhost', 'tcp') = 8100;  -- reused
    ASSERT (SELECT count(*) FROM port_allocations WHERE port_number = 8100 AND status = 'released') = 2;
    INSERT INTO port_reservations (project_id, port_range_id, port_number, service_name, reserved_by, expires_at)
    VALUES (v_project, v_range, 8102, 'later', 'supervisor', now() + interval '1 hour');
    ASSERT find_available_port(v_range, 'localhost', 'tcp') IS NULL;
    ASSERT allocate_port(v_project, v_range, 'later', NULL, 'localhost', 'tcp') = 8102;  -- its reservation
    ASSERT NOT EXISTS (SELECT 1 FROM port_reservations);
    BEGIN
        PERFORM allocate_port(v_project, v_range, 'one-too-many', NULL, 'localhost', 'tcp');
        RAISE EXCEPTION 'allocate_port did not report the exhausted range';
    EXCEPTION WHEN SQLSTATE 'MP002' THEN NULL;
    END;
    ASSERT (SELECT allocated_ports FROM port_range_utilization WHERE range_id = v_range) = 3;
    ASSERT (SELECT utilization_percent FROM port_range_utilization WHERE range_id = v_range) = 100.00;
    ASSERT (SELECT count(*) FROM active_port_allocations) = 3;
    ASSERT cleanup_expired_reservations() = 0;
END
$$""",
    # task timing: the trigger's metrics, estimation patterns, the views
    """DO $$
DECLARE
    v_project UUID;
    v_task    UUID;
    v_pattern estimation_patterns;
BEGIN
    INSERT INTO projects (name, path) VALUES ('odin', '/srv/odin') RETURNING id INTO v_project;
    INSERT INTO tasks (project_id, title, estimated_minutes) VALUES (v_project, 'Add endpoint', 60)
        RETURNING id INTO v_task;
    INSERT INTO task_executions (task_id, project_id, execution_number, started_at, completed_at,
                                 estimated_minutes, complexity)
    VALUES (v_task, v_project, 1, '2025-01-01 10:00+00', '2025-01-01 11:30+00', 60, 'moderate'),
           (v_task, v_project, 2, '2025-01-02 10:00+00', '2025-01-02 10:45+00', 60, 'moderate');
    ASSERT (SELECT duration_minutes FROM task_executions WHERE execution_number = 1) = 90;
    ASSERT (SELECT variance_percent FROM task_executions WHERE execution_number = 1) = 50.00;
    ASSERT (SELECT status FROM task_executions WHERE execution_number = 2) = 'completed';
    ASSERT (SELECT under_estimated FROM estimation_accuracy_by_project WHERE project_id = v_project) = 1;
    ASSERT (SELECT over_estimated FROM estimation_accuracy_by_project WHERE project_id = v_project) = 1;
    ASSERT (SELECT execution_count FROM task_performance_trends WHERE task_id = v_task) = 2;
    PERFORM update_estimation_pattern(v_project, 'api_endpoint', 'moderate', 40);
    PERFORM update_estimation_pattern(v_project, 'api_endpoint', 'moderate', 50);
    ASSERT get_recommended_estimate(v_project, 'api_endpoint', 'moderate') IS NULL;  -- < 3 samples
    v_pattern := update_estimation_pattern(v_project, 'api_endpoint', 'moderate', 60);
    ASSERT v_pattern.sample_count = 3 AND v_pattern.avg_duration_minutes = 50.00;
    ASSERT v_pattern.std_deviation = 10.00 AND v_pattern.confidence_score = 0.30;
    ASSERT get_recommended_estimate(v_project, 'api_endpoint', 'moderate') = 50;
END
$$""",
    # secrets: access logging keeps the counters, the two views
    """DO $$
DECLARE
    v_project UUID;
    v_key     UUID;
    v_secret  UUID;
    v_number  INTEGER;
BEGIN
    INSERT INTO projects (name, path) VALUES ('openhorizon', '/srv/openhorizon') RETURNING id INTO v_project;
    INSERT INTO minno.encryption_keys (key_name, encrypted_key) VALUES ('example-key', 'bm90LWEta2V5')
        RETURNING id, key_number INTO v_key, v_number;
    -- a well-formed encrypted field under that key (minno/0007 refuses plaintext); not meant to decrypt
    INSERT INTO secrets (project_id, key_name, encrypted_value, encryption_key_id, secret_type, expires_at)
    VALUES (v_project, 'API_TOKEN', encode('\\x01'::bytea || int4send(v_number) || convert_to(repeat('c', 28), 'UTF8'),
                                           'base64'), v_key, 'api_key', now() + interval '10 days')
        RETURNING id INTO v_secret;
    INSERT INTO secret_rotation_schedule (secret_id, rotation_interval_days, next_rotation_at, auto_rotate)
    VALUES (v_secret, 90, now() + interval '2 days', true);
    INSERT INTO secret_access_log (secret_id, accessed_by, access_type) VALUES (v_secret, 'supervisor', 'read');
    ASSERT (SELECT access_count FROM secrets WHERE id = v_secret) = 1;
    ASSERT (SELECT project_name FROM secrets_expiring_soon WHERE id = v_secret) = 'openhorizon';
    ASSERT (SELECT auto_rotate FROM secrets_needing_rotation WHERE id = v_secret);
END
$$""",
]
