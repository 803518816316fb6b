-- On a Citus cluster (migrations/README.md, "Distribution"): the archiving of chatbot-conversations.sql
-- as two statements, run in order on one shard's rows of the batch (%(keys)s and %(route)s: their ids;
-- by key, not ctid: Citus cannot plan a ctid inside a subquery).
-- cleanup holds those conversations FOR UPDATE, so no message can join them until the transaction ends
-- and both statements see the same messages. The one-statement form cannot be used here: Citus runs a
-- statement's data-modifying CTEs one after another, so the foreign key's cascade would delete the
-- messages before the CTE that archives them read them.
--
-- 1. archive the messages of the conversations that are still due (none newer than the cutoff)
INSERT INTO chatbot.messages_archive (id, conversation_id, role, content, created_at, metadata)
SELECT m.id, m.conversation_id, m.role, m.content, m.created_at, m.metadata
  FROM chatbot.messages m
 WHERE m.conversation_id = ANY(%(route)s)
   AND m.conversation_id IN (SELECT t.id FROM chatbot.conversations t
                              WHERE t.id = ANY(%(keys)s)
                                AND coalesce((SELECT max(m2.created_at) FROM chatbot.messages m2
                                               WHERE m2.conversation_id = t.id), '-infinity') < %(cutoff)s);
-- 2. move the same conversations (their messages go by the cascade, archived above)
WITH c AS (DELETE FROM chatbot.conversations t
            WHERE t.id = ANY(%(keys)s)
              AND coalesce((SELECT max(m.created_at) FROM chatbot.messages m
                             WHERE m.conversation_id = t.id), '-infinity') < %(cutoff)s
           RETURNING t.id, t.user_id, t.created_at, t.updated_at, t.metadata),
     ca AS (INSERT INTO chatbot.conversations_archive (id, user_id, created_at, updated_at, metadata)
            SELECT id, user_id, created_at, updated_at, metadata FROM c RETURNING 1)
SELECT (SELECT count(*) FROM ca) AS rows, (SELECT count(*) FROM ca) AS archived;
