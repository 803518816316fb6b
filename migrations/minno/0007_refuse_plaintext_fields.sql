-- The guard of the encrypted columns refuses a value that is not an encrypted field: a plaintext
-- write (spec 002's storeUserTokens() as its document writes it) fails instead of passing silently.
--
-- Until 0006 the guard checked only well-formed fields and let "anything else pass untouched", so an
-- application that stored a token in plaintext succeeded, and `token verify` / `token rotate` failed
-- later. Issue 16 allowed refusal or a documented plaintext-compatibility mode; this is refusal:
-- * A new non-NULL value must be a well-formed field (minnoctl/clients/FORMAT.md): strict base64
--   (standard alphabet, padded, no whitespace: PostgreSQL's decode() would skip whitespace) of at
--   least 33 bytes (header 5 + nonce 12 + tag 16) whose first byte is the version, 1. Anything else
--   is SQLSTATE MK002 with a message naming schema.table.column and the client libraries. The
--   message never contains the value, nor a byte of it (not even the version byte found).
-- * NULL passes (no token). An UPDATE that leaves the column as it was passes, as in 0006: a row
--   stored in plaintext before this migration keeps working for updates of its other columns;
--   `health` (key_fields, WARNING) counts such rows per column, `token verify` names them, and
--   `token rotate` skips them (they are on no key, so they never keep an old key alive).
-- * The well-formedness check comes before the key look-up, so a refused value locks no key row.
-- * The key check (MK001: a field under a retired, fenced or unknown key) is unchanged, as is
--   everything else of 0006 (SECURITY DEFINER, search_path minno, pg_temp, qualified names; the
--   EXECUTE revoked from PUBLIC stays revoked: CREATE OR REPLACE keeps the privileges).
-- * One function serves every encrypted column (minno.oauth_tokens, assistant.user_tokens,
--   assistant.oauth_tokens, supervisor.secrets): the triggers of those modules pick it up as is.
-- depends: 0006_key_row_share_lock

SET LOCAL search_path = minno, public;

CREATE OR REPLACE FUNCTION reject_retired_field_keys() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = minno, pg_temp AS $$
DECLARE
    col text;
    val text;
    why text;
    head bytea;
    num integer;
    st text;
    fenced timestamptz;
BEGIN
    FOREACH col IN ARRAY TG_ARGV LOOP
        val := to_jsonb(NEW) ->> col;
        CONTINUE WHEN val IS NULL;
        CONTINUE WHEN TG_OP = 'UPDATE' AND val IS NOT DISTINCT FROM to_jsonb(OLD) ->> col;
        why := NULL;
        IF length(val) % 4 <> 0 OR val !~ '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$' THEN
            why := 'it is not base64';
        ELSIF length(val) / 4 * 3 - (length(val) - length(rtrim(val, '='))) < 33 THEN
            why := 'it is too short for one';
        ELSIF get_byte(decode(left(val, 8), 'base64'), 0) <> 1 THEN
            why := 'its format version is not 1';
        END IF;
        IF why IS NOT NULL THEN
            RAISE EXCEPTION '%.%.%: the value is not an encrypted field (%) — encrypt it with minnoctl.crypto '
                '(Python) or minnoctl/clients/node/minno-fields.cjs (Node)', TG_TABLE_SCHEMA, TG_TABLE_NAME, col, why
                USING ERRCODE = 'MK002',
                      HINT = 'this column holds only minnoctl encrypted fields (minnoctl/clients/FORMAT.md); '
                             'plaintext is refused';
        END IF;
        head := decode(left(val, 8), 'base64');
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
