-- Undo chatbot/0003_archive: drop the archive tables (and what they hold).

SET LOCAL search_path = chatbot, public;

DROP TABLE messages_archive;
DROP TABLE conversations_archive;
