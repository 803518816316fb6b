-- Chatbot schema (document 001): conversations and messages, the four indexes of the
-- document's schema, and an updated_at trigger on conversations.
--
-- The document gives the DDL (it matches its Drizzle schema); it is kept as written:
-- * created_at / updated_at are TIMESTAMP (without time zone) NOT NULL DEFAULT now(), as in the
--   DDL and Drizzle's timestamp(); metadata is JSONB DEFAULT '{}'::jsonb and stays nullable.
-- * messages.role VARCHAR(50) NOT NULL CHECK (role IN ('user', 'assistant', 'system')); the
--   constraint keeps PostgreSQL's default name messages_role_check.
-- * messages.conversation_id references conversations(id) ON DELETE CASCADE
--   (messages_conversation_id_fkey).
-- * idx_conversations_created_at is on created_at DESC; idx_messages_conversation_id is the
--   composite (conversation_id, created_at) and also serves the foreign key.
-- Added: the document has updated_at but no trigger; update_conversations_updated_at sets it
-- on every UPDATE through this schema's update_updated_at_column(). The document's explicit
-- "UPDATE conversations SET updated_at = NOW()" still works (the trigger writes the same
-- value). The production GIN indexes are in 0002_production_indexes.
-- depends: 0006_key_row_share_lock

SET LOCAL search_path = chatbot, public;
CREATE SCHEMA IF NOT EXISTS chatbot;

CREATE FUNCTION update_updated_at_column()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = chatbot, public
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE conversations (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    VARCHAR(255) NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT now(),
    updated_at TIMESTAMP NOT NULL DEFAULT now(),
    metadata   JSONB DEFAULT '{}'::jsonb
);

CREATE INDEX idx_conversations_user_id ON conversations (user_id);
CREATE INDEX idx_conversations_created_at ON conversations (created_at DESC);

CREATE TABLE messages (
    id              UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id UUID NOT NULL,
    role            VARCHAR(50) NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    content         TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL DEFAULT now(),
    metadata        JSONB DEFAULT '{}'::jsonb,
    FOREIGN KEY (conversation_id) REFERENCES conversations (id) ON DELETE CASCADE
);

CREATE INDEX idx_messages_conversation_id ON messages (conversation_id, created_at);
CREATE INDEX idx_messages_role ON messages (role);

CREATE TRIGGER update_conversations_updated_at
    BEFORE UPDATE ON conversations
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
