-- One statement: delete the conversations (re-checked in this statement's snapshot: a message
-- committed since the batch was chosen keeps its conversation; new messages into the locked
-- conversations wait for this transaction), archive them, and archive their messages, which the
-- statement still sees before the foreign key's cascade deletes them at its end.
--
-- The forms are chosen for the plan: ctid = ANY(...) is a TID scan, and the newest message as a
-- correlated subquery is one index probe per row (NOT EXISTS became a hash anti join over the
-- whole messages index); the messages to archive are found by conversation id, not by a semi join
-- the planner would run as a sequential scan of every message.
WITH c AS (DELETE FROM chatbot.conversations t
            WHERE t.ctid = ANY(%(tids)s::tid[])
              AND coalesce((SELECT max(m.created_at) FROM chatbot.messages m
                             WHERE m.conversation_id = t.id), '-infinity') < %(cutoff)s
           RETURNING t.id, t.user_id, t.created_at, t.updated_at, t.metadata),
     ca AS (INSERT INTO chatbot.conversations_archive (id, user_id, created_at, updated_at, metadata)
            SELECT id, user_id, created_at, updated_at, metadata FROM c),
     ma AS (INSERT INTO chatbot.messages_archive (id, conversation_id, role, content, created_at, metadata)
            SELECT m.id, m.conversation_id, m.role, m.content, m.created_at, m.metadata
              FROM chatbot.messages m
             WHERE m.conversation_id = ANY(%(keys)s) AND m.conversation_id IN (SELECT id FROM c)
            RETURNING 1)
SELECT (SELECT count(*) FROM c) AS rows, (SELECT count(*) FROM c) + (SELECT count(*) FROM ma) AS archived
