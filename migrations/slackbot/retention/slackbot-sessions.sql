UPDATE slackbot.user_sessions SET is_active = false WHERE ctid = ANY(%(tids)s::tid[]) AND is_active
