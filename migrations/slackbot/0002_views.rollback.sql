-- Undo slackbot/0002_views.

DROP VIEW cache_efficiency;
DROP VIEW user_activity_summary;
DROP VIEW query_performance_metrics;
DROP VIEW active_sessions;
