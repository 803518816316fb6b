-- Undo supervisor/0001_initial_schema: drop the triggers, indexes, tables and the trigger
-- function, in reverse order of creation. Unique constraints (epics_project_id_epic_id_key,
-- issues_project_id_issue_number_key, service_status_project_id_service_name_key,
-- comments_github_id_key) go with their tables.

SET LOCAL search_path = supervisor, public;

DROP TRIGGER update_comments_updated_at ON comments;
DROP TRIGGER update_service_status_updated_at ON service_status;
DROP TRIGGER update_tasks_updated_at ON tasks;
DROP TRIGGER update_issues_updated_at ON issues;
DROP TRIGGER update_epics_updated_at ON epics;
DROP TRIGGER update_projects_updated_at ON projects;

DROP INDEX idx_comments_created_at;
DROP INDEX idx_comments_task_id;
DROP INDEX idx_comments_issue_id;
DROP TABLE comments;

DROP INDEX idx_service_status_last_check;
DROP INDEX idx_service_status_status;
DROP INDEX idx_service_status_project_id;
DROP TABLE service_status;

DROP INDEX idx_tasks_order_index;
DROP INDEX idx_tasks_status;
DROP INDEX idx_tasks_issue_id;
DROP INDEX idx_tasks_epic_id;
DROP INDEX idx_tasks_project_id;
DROP TABLE tasks;

DROP INDEX idx_issues_labels;
DROP INDEX idx_issues_github_id;
DROP INDEX idx_issues_priority;
DROP INDEX idx_issues_status;
DROP INDEX idx_issues_epic_id;
DROP INDEX idx_issues_project_id;
DROP TABLE issues;

DROP INDEX idx_epics_priority;
DROP INDEX idx_epics_status;
DROP INDEX idx_epics_epic_id;
DROP INDEX idx_epics_project_id;
DROP TABLE epics;

DROP INDEX idx_projects_status;
DROP INDEX idx_projects_name;
DROP TABLE projects;

DROP FUNCTION update_updated_at_column();

-- Last, the schema 0001 created, as minnoctl's own rollback of a module's last migration
-- does: without CASCADE, so it fails (and the whole rollback with it) while objects that
-- these migrations did not create remain in it.
DROP SCHEMA IF EXISTS supervisor;
