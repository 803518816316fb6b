-- Undo 0005_key_write_fence.sql: the guard of 0004 again, without the fence.

SET LOCAL search_path = minno, public;

CREATE OR REPLACE FUNCTION reject_retired_field_keys() RETURNS trigger
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

ALTER TABLE encryption_keys DROP COLUMN write_fenced_at;
