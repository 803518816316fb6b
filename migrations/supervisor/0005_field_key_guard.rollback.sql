DROP TRIGGER guard_secrets_field_keys ON secrets;
