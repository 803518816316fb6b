-- The guard trigger takes a row lock on the data key it checks, so a writer's old snapshot cannot
-- let a field under a retired key through.
--
-- In REPEATABLE READ or SERIALIZABLE the guard of 0005 read the key's status under the writer's
-- snapshot: a transaction that began before a rotation still saw the old key active, and its field
-- was stored under a key the rotation had meanwhile destroyed. Now the guard reads the key row
-- FOR SHARE. That lock looks at the row's newest version whatever the snapshot: a repeatable-read
-- writer whose snapshot predates a change of the key row (the switch to decrypt_only, the fence,
-- the retirement, a master re-wrap) fails with a serialization failure (SQLSTATE 40001) and retries
-- as such writers must; a read-committed writer waits for a change in progress and then sees it.
-- The lock also holds the key row until the writer commits, so the rotation's fence and
-- retirement (UPDATEs of that row) wait for writers that wrote under the key; minnoctl bounds that
-- wait with lock_timeout.
-- An UPDATE that leaves an encrypted field as it was is not checked any more: the field is not new
-- (the rotation moves existing fields), so updating a token's other columns locks no key row and
-- never fails because the field's key is being retired.
-- Choices:
-- * FOR SHARE, not FOR KEY SHARE: a key share lock does not conflict with an UPDATE that leaves the
--   row's key alone, so it would not see the fence or the retirement. Its cost is that of a foreign
--   key check (which locks the referenced row FOR KEY SHARE): concurrent writers share the lock;
--   bench/token_rotate.py shows no change in the rotation's rate.
-- * SECURITY DEFINER: FOR SHARE needs UPDATE privilege on the table, and an application role
--   should need only SELECT on the keyring; the function runs as its owner (the role that ran the
--   migrations). Its search_path is minno, pg_temp (pg_temp last, the safe form for a security
--   definer function, instead of the usual <module>, public), every name in it is qualified, and
--   EXECUTE is revoked from PUBLIC: the triggers already attached keep firing (the privilege is
--   checked when a trigger is created), and only the owner can attach it to another table.
-- depends: 0005_key_write_fence

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

REVOKE EXECUTE ON FUNCTION reject_retired_field_keys() FROM PUBLIC;
