-- On a Citus cluster (migrations/README.md, "Distribution"): the archiving of slackbot-audit-logs.sql,
-- run on one shard's rows of the batch (%(keys)s: their ids, the distribution column; the archive is
-- co-located with the log).
-- Copied first and deleted second, in two statements, so no row is ever only in a CTE's result.
INSERT INTO slackbot.audit_logs_archive (id, event_type, event_category, event_description, event_data,
                                         slack_user_id, slack_team_id, slack_channel_id, session_id, created_at)
SELECT id, event_type, event_category, event_description, event_data, slack_user_id, slack_team_id,
       slack_channel_id, session_id, created_at
  FROM slackbot.audit_logs WHERE id = ANY(%(keys)s);
DELETE FROM slackbot.audit_logs WHERE id = ANY(%(keys)s)
