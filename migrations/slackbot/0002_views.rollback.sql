-- Undo slackbot/0002_views.

SET LOCAL search_path = slackbot, public;

DROP VIEW cache_efficiency;
DROP VIEW user_activity_summary;
DROP VIEW query_performance_metrics;
DROP VIEW active_sessions;
