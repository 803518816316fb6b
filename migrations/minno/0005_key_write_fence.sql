-- A write fence for data keys about to be retired, so retiring never blocks writers.
--
-- Before a rotation retires its old keys it fences them (write_fenced_at): from then on the guard
-- trigger rejects a new field under them (SQLSTATE MK001) while they still decrypt. minnoctl then
-- waits for the transactions that began before the fence, re-encrypts what they wrote, counts
-- without any table lock (no new field can appear under a fenced key) and retires the keys in a
-- short transaction. The previous approach, a SHARE lock on every token table while counting,
-- made writers wait about 3 s on a million tokens.
-- depends: 0004_field_key_guard

SET LOCAL search_path = minno, public;

ALTER TABLE encryption_keys ADD COLUMN write_fenced_at TIMESTAMPTZ;

CREATE OR REPLACE FUNCTION reject_retired_field_keys() RETURNS trigger
    LANGUAGE plpgsql SET search_path = minno, public AS $$
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
        head := decode(left(val, 8), 'base64');
        CONTINUE WHEN get_byte(head, 0) <> 1;
        num := ('x' || encode(substring(head from 2 for 4), 'hex'))::bit(32)::int;
        SELECT status, write_fenced_at INTO st, fenced FROM minno.encryption_keys WHERE key_number = num;
        IF st IS NULL OR st = 'retired' OR fenced IS NOT NULL THEN
            RAISE EXCEPTION '%.%: the field is encrypted with data key %, which is %', TG_TABLE_NAME, col, num,
                CASE WHEN st IS NULL THEN 'unknown' WHEN st = 'retired' THEN 'retired' ELSE 'being retired' END
                USING ERRCODE = 'MK001', HINT = 'reload the keyring (minnoctl.crypto.Keyring.load) and write again';
        END IF;
    END LOOP;
    RETURN NEW;
END;
$$;
