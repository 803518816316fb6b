-- Moved, not copied: the rows deleted are the rows archived (the statement's row count).
WITH moved AS (DELETE FROM slackbot.audit_logs WHERE ctid = ANY(%(tids)s::tid[])
               RETURNING id, event_type, event_category, event_description, event_data, slack_user_id,
                         slack_team_id, slack_channel_id, session_id, created_at)
INSERT INTO slackbot.audit_logs_archive (id, event_type, event_category, event_description, event_data,
                                         slack_user_id, slack_team_id, slack_channel_id, session_id, created_at)
SELECT id, event_type, event_category, event_description, event_data, slack_user_id, slack_team_id,
       slack_channel_id, session_id, created_at FROM moved
