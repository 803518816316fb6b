-- Undo chatbot/0003_archive: drop the archive tables (and what they hold).

DROP TABLE messages_archive;
DROP TABLE conversations_archive;
