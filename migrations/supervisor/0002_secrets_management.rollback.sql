-- Undo supervisor/0002_secrets_management: drop the views, triggers, the trigger function,
-- indexes and tables, in reverse order of creation. Unique constraints
-- (secret_rotation_schedule_secret_id_key, secret_templates_template_name_key) go with their
-- tables.

SET LOCAL search_path = supervisor, public;

DROP VIEW secrets_needing_rotation;
DROP VIEW secrets_expiring_soon;

DROP TRIGGER update_secret_templates_updated_at ON secret_templates;
DROP TRIGGER update_secret_rotation_schedule_updated_at ON secret_rotation_schedule;
DROP TRIGGER update_secrets_updated_at ON secrets;
DROP TRIGGER track_secret_access ON secret_access_log;
DROP FUNCTION record_secret_access();

DROP TABLE secret_templates;

DROP INDEX idx_secret_rotation_schedule_auto_rotate;
DROP INDEX idx_secret_rotation_schedule_next_rotation_at;
DROP TABLE secret_rotation_schedule;

DROP INDEX idx_secret_access_log_success;
DROP INDEX idx_secret_access_log_accessed_at;
DROP INDEX idx_secret_access_log_accessed_by;
DROP INDEX idx_secret_access_log_secret_id;
DROP TABLE secret_access_log;

DROP INDEX idx_secrets_expires_at;
DROP INDEX idx_secrets_secret_type;
DROP INDEX idx_secrets_encryption_key_id;
DROP INDEX idx_secrets_key_name;
DROP INDEX idx_secrets_project_id;
DROP INDEX idx_secrets_global_key_name;
DROP INDEX idx_secrets_project_key_name;
DROP TABLE secrets;
