-- Undo chatbot/0003_archive: drop the archive tables (and what they hold).

DROP INDEX idx_messages_archive_conversation_id;
DROP TABLE messages_archive;
DROP INDEX idx_conversations_archive_archived_at;
DROP INDEX idx_conversations_archive_user_id;
DROP TABLE conversations_archive;
