-- Undo 0007_refuse_plaintext_fields.sql: the guard of 0006 again (well-formed fields checked,
-- anything else let through), its body exactly as 0006 wrote it.
SET LOCAL search_path = minno, public;

CREATE OR REPLACE FUNCTION reject_retired_field_keys() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = minno, pg_temp AS $$
DECLARE
    col text;
    val text;
    head bytea;
    num integer;
    st text;
    fenced timestamptz;
BEGIN
    FOREACH col IN ARRAY TG_ARGV LOOP
        val := to_jsonb(NEW) ->> col;
        CONTINUE WHEN val IS NULL OR left(val, 8) !~ '^[A-Za-z0-9+/]{8}$';
        CONTINUE WHEN TG_OP = 'UPDATE' AND val IS NOT DISTINCT FROM to_jsonb(OLD) ->> col;
        head := decode(left(val, 8), 'base64');
        CONTINUE WHEN get_byte(head, 0) <> 1;
        num := ('x' || encode(substring(head from 2 for 4), 'hex'))::bit(32)::int;
        SELECT k.status, k.write_fenced_at INTO st, fenced FROM minno.encryption_keys k
         WHERE k.key_number = num FOR SHARE;
        IF st IS NULL OR st = 'retired' OR fenced IS NOT NULL THEN
            RAISE EXCEPTION '%.%: the field is encrypted with data key %, which is %', TG_TABLE_NAME, col, num,
                CASE WHEN st IS NULL THEN 'unknown' WHEN st = 'retired' THEN 'retired' ELSE 'being retired' END
                USING ERRCODE = 'MK001', HINT = 'reload the keyring (minnoctl.crypto.Keyring.load) and write again';
        END IF;
    END LOOP;
    RETURN NEW;
END;
$$;
