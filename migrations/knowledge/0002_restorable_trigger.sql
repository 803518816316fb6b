-- Make the learnings trigger restorable from a pg_dump backup.
--
-- 0001's update_learnings_updated_at compared the embedding with IS DISTINCT FROM, which finds
-- pgvector's = operator through the search_path. pg_dump prints that comparison unqualified (IS
-- DISTINCT FROM takes no schema) and restores with an empty search_path, so every restore of a
-- backup failed at this trigger: "operator does not exist: public.vector = public.vector" (found
-- by `minnoctl backup verify --restore-test`). The embedding is now compared as text: an I/O cast
-- and text's own operator, found whatever the search_path; equal vectors print the same text.
-- depends: 0001_learnings_index

SET LOCAL search_path = knowledge, public;

DROP TRIGGER update_learnings_updated_at ON learnings;

CREATE TRIGGER update_learnings_updated_at
    BEFORE UPDATE ON learnings
    FOR EACH ROW
    WHEN ((OLD.project_id, OLD.title, OLD.content, OLD.learning_type, OLD.category,
           OLD.confidence_score, OLD.impact_level, OLD.source_chunks, OLD.tags, OLD.embedding::text,
           OLD.verified, OLD.verified_by, OLD.verified_at, OLD.metadata)
          IS DISTINCT FROM
          (NEW.project_id, NEW.title, NEW.content, NEW.learning_type, NEW.category,
           NEW.confidence_score, NEW.impact_level, NEW.source_chunks, NEW.tags, NEW.embedding::text,
           NEW.verified, NEW.verified_by, NEW.verified_at, NEW.metadata))
    EXECUTE FUNCTION update_updated_at_column();
