DELETE FROM slackbot.query_cache WHERE ctid = ANY(%(tids)s::tid[])
