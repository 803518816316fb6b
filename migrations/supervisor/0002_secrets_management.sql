-- supervisor-service (document 003), its migration 002: secrets, secret_access_log,
-- secret_rotation_schedule, secret_templates and the views secrets_expiring_soon and
-- secrets_needing_rotation. The document's encryption_keys table is the keyring of the core
-- module (minno/0002_encryption_keys); secrets reference it as minno.encryption_keys(id).
--
-- Conventions as in supervisor/0001 (UUID ids, TIMESTAMPTZ, metadata a JSONB object,
-- idx_<table>_<column> index names, update_<table>_updated_at triggers). Choices made here:
-- * Nothing is encrypted in SQL (the document suggests pgcrypto): secrets.encrypted_value is
--   TEXT NOT NULL, the application's AES-256-GCM ciphertext in base64, made with the data key of
--   the row encryption_key_id points at. encryption_key_id is NOT NULL, ON DELETE RESTRICT: a key
--   cannot be deleted while a secret still needs it.
-- * secrets.project_id is nullable (NULL = a global secret shared by all projects), ON DELETE
--   CASCADE. key_name VARCHAR(255) is unique per project and among global secrets: two partial
--   unique indexes, idx_secrets_project_key_name (project_id, key_name) WHERE project_id IS NOT
--   NULL and idx_secrets_global_key_name (key_name) WHERE project_id IS NULL (PostgreSQL 14 has
--   no NULLS NOT DISTINCT).
-- * secret_type VARCHAR(50) NOT NULL DEFAULT 'generic', an open vocabulary (api_key, password,
--   token, certificate, ...; secret_templates defines more), so no CHECK list, only not empty.
-- * access_count INTEGER NOT NULL DEFAULT 0 (>= 0); last_accessed_at / expires_at nullable
--   (NULL = never accessed / never expires).
-- * secret_access_log: secret_id nullable, ON DELETE SET NULL, so the audit trail survives the
--   secret's deletion. accessed_by VARCHAR(255) NOT NULL; access_type VARCHAR(20) NOT NULL CHECK
--   IN ('read', 'create', 'update', 'delete', 'rotate'); success BOOLEAN NOT NULL DEFAULT true;
--   ip_address INET; accessed_at NOT NULL DEFAULT now(). The log is append-only: no updated_at.
-- * "Secret access is automatically logged" (document): the application inserts one
--   secret_access_log row per access, and the trigger track_secret_access (function
--   record_secret_access) then bumps secrets.access_count and last_accessed_at for every
--   successful 'read'. The application must not update those two columns itself.
-- * secrets' updated_at trigger fires only when something other than access_count /
--   last_accessed_at changes, so reading a secret does not look like changing it.
-- * secret_rotation_schedule: one schedule per secret (secret_id NOT NULL UNIQUE, ON DELETE
--   CASCADE); rotation_interval_days INTEGER NOT NULL > 0; next_rotation_at NOT NULL (the
--   application sets it to last rotation + interval); last_rotation_at NULL until the first
--   rotation; auto_rotate BOOLEAN NOT NULL DEFAULT false; notification_days INTEGER NOT NULL
--   DEFAULT 7 (>= 0).
-- * secret_templates: template_name VARCHAR(255) NOT NULL UNIQUE; secret_type NOT NULL;
--   validation_pattern TEXT (a regular expression the application checks values against);
--   rotation_interval_days INTEGER > 0, NULL = no rotation suggested.
-- Views:
-- * secrets_expiring_soon: secrets whose expires_at is within the next 30 days, including the
--   ones already expired (time_until_expiry is then negative), soonest first; project_name is
--   NULL for global secrets.
-- * secrets_needing_rotation: secrets whose schedule's next_rotation_at is within the next 7
--   days, including overdue ones (negative time_until_rotation); id is the secret's id.
-- depends: 0001_initial_schema

SET LOCAL search_path = supervisor, public;

CREATE TABLE secrets (
    id                UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id        UUID REFERENCES projects (id) ON DELETE CASCADE,
    key_name          VARCHAR(255) NOT NULL CHECK (key_name <> ''),
    encrypted_value   TEXT NOT NULL CHECK (encrypted_value <> ''),
    encryption_key_id UUID NOT NULL REFERENCES minno.encryption_keys (id) ON DELETE RESTRICT,
    secret_type       VARCHAR(50) NOT NULL DEFAULT 'generic' CHECK (secret_type <> ''),
    description       TEXT,
    metadata          JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    last_accessed_at  TIMESTAMPTZ,
    access_count      INTEGER NOT NULL DEFAULT 0 CHECK (access_count >= 0),
    expires_at        TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX idx_secrets_project_key_name
    ON secrets (project_id, key_name) WHERE project_id IS NOT NULL;
CREATE UNIQUE INDEX idx_secrets_global_key_name
    ON secrets (key_name) WHERE project_id IS NULL;
CREATE INDEX idx_secrets_project_id ON secrets (project_id);
CREATE INDEX idx_secrets_key_name ON secrets (key_name);
CREATE INDEX idx_secrets_encryption_key_id ON secrets (encryption_key_id);
CREATE INDEX idx_secrets_secret_type ON secrets (secret_type);
CREATE INDEX idx_secrets_expires_at ON secrets (expires_at);

CREATE TABLE secret_access_log (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    secret_id     UUID REFERENCES secrets (id) ON DELETE SET NULL,
    accessed_by   VARCHAR(255) NOT NULL CHECK (accessed_by <> ''),
    access_type   VARCHAR(20) NOT NULL
                  CHECK (access_type IN ('read', 'create', 'update', 'delete', 'rotate')),
    success       BOOLEAN NOT NULL DEFAULT true,
    error_message TEXT,
    ip_address    INET,
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    accessed_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_secret_access_log_secret_id ON secret_access_log (secret_id);
CREATE INDEX idx_secret_access_log_accessed_by ON secret_access_log (accessed_by);
CREATE INDEX idx_secret_access_log_accessed_at ON secret_access_log (accessed_at);
CREATE INDEX idx_secret_access_log_success ON secret_access_log (success);

CREATE TABLE secret_rotation_schedule (
    id                     UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    secret_id              UUID NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    rotation_interval_days INTEGER NOT NULL CHECK (rotation_interval_days > 0),
    last_rotation_at       TIMESTAMPTZ,
    next_rotation_at       TIMESTAMPTZ NOT NULL,
    auto_rotate            BOOLEAN NOT NULL DEFAULT false,
    notification_days      INTEGER NOT NULL DEFAULT 7 CHECK (notification_days >= 0),
    metadata               JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT secret_rotation_schedule_secret_id_key UNIQUE (secret_id)
);

CREATE INDEX idx_secret_rotation_schedule_next_rotation_at
    ON secret_rotation_schedule (next_rotation_at);
CREATE INDEX idx_secret_rotation_schedule_auto_rotate
    ON secret_rotation_schedule (auto_rotate);

CREATE TABLE secret_templates (
    id                     UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    template_name          VARCHAR(255) NOT NULL CHECK (template_name <> ''),
    secret_type            VARCHAR(50) NOT NULL CHECK (secret_type <> ''),
    description            TEXT,
    validation_pattern     TEXT,
    rotation_interval_days INTEGER CHECK (rotation_interval_days > 0),
    metadata               JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT secret_templates_template_name_key UNIQUE (template_name)
);

CREATE FUNCTION record_secret_access()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = supervisor, public
AS $$
BEGIN
    IF NEW.secret_id IS NOT NULL AND NEW.success AND NEW.access_type = 'read' THEN
        UPDATE secrets
           SET access_count = access_count + 1,
               last_accessed_at = GREATEST(COALESCE(last_accessed_at, NEW.accessed_at), NEW.accessed_at)
         WHERE id = NEW.secret_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER track_secret_access
    AFTER INSERT ON secret_access_log
    FOR EACH ROW EXECUTE FUNCTION record_secret_access();

CREATE TRIGGER update_secrets_updated_at
    BEFORE UPDATE ON secrets
    FOR EACH ROW
    WHEN ((OLD.project_id, OLD.key_name, OLD.encrypted_value, OLD.encryption_key_id,
           OLD.secret_type, OLD.description, OLD.metadata, OLD.expires_at)
          IS DISTINCT FROM
          (NEW.project_id, NEW.key_name, NEW.encrypted_value, NEW.encryption_key_id,
           NEW.secret_type, NEW.description, NEW.metadata, NEW.expires_at))
    EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_secret_rotation_schedule_updated_at
    BEFORE UPDATE ON secret_rotation_schedule
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();
CREATE TRIGGER update_secret_templates_updated_at
    BEFORE UPDATE ON secret_templates
    FOR EACH ROW EXECUTE FUNCTION update_updated_at_column();

CREATE VIEW secrets_expiring_soon AS
SELECT
    s.id,
    s.project_id,
    s.key_name,
    s.secret_type,
    s.expires_at,
    s.expires_at - now() AS time_until_expiry,
    p.name               AS project_name
FROM secrets AS s
LEFT JOIN projects AS p ON p.id = s.project_id
WHERE s.expires_at IS NOT NULL
  AND s.expires_at <= now() + interval '30 days'
ORDER BY s.expires_at;

CREATE VIEW secrets_needing_rotation AS
SELECT
    s.id,
    s.project_id,
    s.key_name,
    s.secret_type,
    r.next_rotation_at,
    r.next_rotation_at - now() AS time_until_rotation,
    r.auto_rotate,
    p.name                     AS project_name
FROM secret_rotation_schedule AS r
JOIN secrets AS s ON s.id = r.secret_id
LEFT JOIN projects AS p ON p.id = s.project_id
WHERE r.next_rotation_at <= now() + interval '7 days'
ORDER BY r.next_rotation_at;
