-- Undo knowledge/0002_restorable_trigger: 0001's trigger again (not restorable by pg_restore).

SET LOCAL search_path = knowledge, public;

DROP TRIGGER update_learnings_updated_at ON learnings;

CREATE TRIGGER update_learnings_updated_at
    BEFORE UPDATE ON learnings
    FOR EACH ROW
    WHEN ((OLD.project_id, OLD.title, OLD.content, OLD.learning_type, OLD.category,
           OLD.confidence_score, OLD.impact_level, OLD.source_chunks, OLD.tags, OLD.embedding,
           OLD.verified, OLD.verified_by, OLD.verified_at, OLD.metadata)
          IS DISTINCT FROM
          (NEW.project_id, NEW.title, NEW.content, NEW.learning_type, NEW.category,
           NEW.confidence_score, NEW.impact_level, NEW.source_chunks, NEW.tags, NEW.embedding,
           NEW.verified, NEW.verified_by, NEW.verified_at, NEW.metadata))
    EXECUTE FUNCTION update_updated_at_column();
