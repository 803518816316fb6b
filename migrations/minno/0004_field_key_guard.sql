-- A guard for encrypted columns: reject a field written under a retired or unknown data key.
--
-- An application that loaded the keyring before a rotation keeps encrypting with the old key. The
-- rotation catches those writes while the old key is decrypt_only, but once it is retired (its
-- wrapped key destroyed) such a field could never be decrypted again. This trigger function turns
-- that write into an error (SQLSTATE MK001), so the application reloads its keyring and retries
-- instead of losing the value. Only well-formed minnoctl.crypto fields are checked (base64 whose
-- first byte is the format version 1); anything else passes untouched.
-- Its arguments are the encrypted columns of the table it is attached to. minnoctl attaches it to
-- minno.oauth_tokens here; the assistant and supervisor modules attach it to theirs.
-- depends: 0003_envelope_keyring

SET LOCAL search_path = minno, public;

CREATE FUNCTION reject_retired_field_keys() RETURNS trigger
    LANGUAGE plpgsql SET search_path = minno, public AS $$
DECLARE
    col text;
    val text;
    head bytea;
    num integer;
    st text;
BEGIN
    FOREACH col IN ARRAY TG_ARGV LOOP
        val := to_jsonb(NEW) ->> col;
        CONTINUE WHEN val IS NULL OR left(val, 8) !~ '^[A-Za-z0-9+/]{8}$';
        head := decode(left(val, 8), 'base64');
        CONTINUE WHEN get_byte(head, 0) <> 1;
        num := ('x' || encode(substring(head from 2 for 4), 'hex'))::bit(32)::int;
        SELECT status INTO st FROM minno.encryption_keys WHERE key_number = num;
        IF st IS NULL OR st = 'retired' THEN
            RAISE EXCEPTION '%.%: the field is encrypted with data key %, which is %', TG_TABLE_NAME, col, num,
                CASE WHEN st IS NULL THEN 'unknown' ELSE 'retired' END
                USING ERRCODE = 'MK001', HINT = 'reload the keyring (minnoctl.crypto.Keyring.load) and write again';
        END IF;
    END LOOP;
    RETURN NEW;
END;
$$;

CREATE TRIGGER guard_oauth_tokens_field_keys
    BEFORE INSERT OR UPDATE ON oauth_tokens
    FOR EACH ROW EXECUTE FUNCTION reject_retired_field_keys('access_token_encrypted', 'refresh_token_encrypted');
