-- Undo supervisor/0004_task_timing: drop the views, triggers, functions, indexes, tables and the
-- constraint added to tasks, in reverse order of creation. Unique constraints and the foreign
-- key task_executions_task_project_fkey go with their tables.

SET LOCAL search_path = supervisor, public;

DROP VIEW task_performance_trends;
DROP VIEW estimation_accuracy_by_project;

DROP TRIGGER update_estimation_factors_updated_at ON estimation_factors;
DROP TRIGGER update_time_tracking_sessions_updated_at ON time_tracking_sessions;
DROP TRIGGER update_estimation_patterns_updated_at ON estimation_patterns;
DROP TRIGGER update_task_executions_updated_at ON task_executions;

DROP FUNCTION get_recommended_estimate(UUID, VARCHAR, VARCHAR);
DROP FUNCTION update_estimation_pattern(UUID, VARCHAR, VARCHAR, INTEGER);

DROP TRIGGER calculate_task_execution_metrics ON task_executions;
DROP FUNCTION calculate_execution_metrics();

DROP INDEX idx_task_execution_factors_factor_id;
DROP INDEX idx_task_execution_factors_task_execution_id;
DROP TABLE task_execution_factors;

DROP TABLE estimation_factors;

DROP INDEX idx_time_tracking_sessions_started_at;
DROP INDEX idx_time_tracking_sessions_activity_type;
DROP INDEX idx_time_tracking_sessions_task_execution_id;
DROP TABLE time_tracking_sessions;

DROP INDEX idx_estimation_patterns_confidence_score;
DROP INDEX idx_estimation_patterns_complexity;
DROP INDEX idx_estimation_patterns_task_type;
DROP INDEX idx_estimation_patterns_project_id;
DROP TABLE estimation_patterns;

DROP INDEX idx_task_executions_complexity;
DROP INDEX idx_task_executions_started_at;
DROP INDEX idx_task_executions_status;
DROP INDEX idx_task_executions_project_id;
DROP INDEX idx_task_executions_task_id;
DROP TABLE task_executions;

ALTER TABLE tasks DROP CONSTRAINT tasks_id_project_id_key;
