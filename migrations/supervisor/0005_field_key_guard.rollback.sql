SET LOCAL search_path = supervisor, public;

DROP TRIGGER guard_secrets_field_keys ON secrets;
