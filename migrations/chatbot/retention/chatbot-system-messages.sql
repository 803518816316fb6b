DELETE FROM chatbot.messages WHERE ctid = ANY(%(tids)s::tid[])
