-- Archive tables for the retention policy of document 001 ("Inactive conversations (>90 days):
-- archive or delete"; "User messages: 90 days: archive"), filled by `minnoctl cleanup`.
--
-- conversations_archive and messages_archive have the columns of conversations and messages
-- plus archived_at, no foreign keys (an archive outlives what it archived) and no CHECKs beyond
-- NOT NULL (a row is archived as it was). minnoctl moves a batch of inactive conversations and
-- all their messages here and deletes them, in one transaction per batch.
-- No indexes and no primary keys: archiving is append-only and must stay cheap next to the
-- DELETE it accompanies (an index on random UUIDs costs a random page write per archived row).
-- Each row is archived once (it is deleted in the same statement). Index the archive when you
-- query it: CREATE INDEX ON chatbot.messages_archive (conversation_id).
-- The document's own implementation (CREATE TABLE conversations_archive AS SELECT ...) made the
-- table on first use; here it exists from the start, so every run appends to it.
-- depends: 0002_production_indexes

SET LOCAL search_path = chatbot, public;

CREATE TABLE conversations_archive (
    id          UUID NOT NULL,
    user_id     VARCHAR(255) NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    metadata    JSONB,
    archived_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE messages_archive (
    id              UUID NOT NULL,
    conversation_id UUID NOT NULL,
    role            VARCHAR(50) NOT NULL,
    content         TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    metadata        JSONB,
    archived_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
