"""The encrypted-field clients the applications use: minnoctl.crypto (Python) and
minnoctl/clients/node/minno-fields.cjs (Node), against the same test vectors
(minnoctl/clients/vectors.json) and against a live database on both servers, and the guard that
refuses plaintext in an encrypted column (minno/0007)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from minnoctl import crypto, tokens
from minnoctl.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ROOT / "minnoctl" / "clients"
NODE_CLIENT = CLIENTS / "node" / "minno-fields.cjs"
VECTORS = json.loads((CLIENTS / "vectors.json").read_text(encoding="utf-8"))
LIBRARIES = "encrypt it with minnoctl.crypto (Python) or minnoctl/clients/node/minno-fields.cjs (Node)"

# Every encrypted column, as the registry lists them: (schema, table, column, primary key column)
USER_TOKEN_COLUMNS = ("google_access_token", "google_refresh_token", "slack_access_token", "slack_refresh_token")



def store_user_tokens_sql() -> str:
    """spec 002's storeUserTokens() statement, verbatim from the document (tests/apps/documents.py;
    the application side is tests/test_apps_outside_in.py)."""
    import re

    from apps import documents

    source = "".join(b.code for b in documents.piece("002-user-tokens"))
    body = source[source.index("async storeUserTokens("):]
    return re.search(r"client\.query\(`(.*?)`", body, re.S).group(1)


def env_for(url: str, kek: crypto.MasterKey) -> dict[str, str]:
    return {"MINNO_DATABASE_URL": url, "MINNO_MASTER_KEY": crypto.encode_key(kek.key)}


def node_config(url: str) -> dict:
    """node-postgres's connection settings for a libpq URL or conninfo (a socket directory as host
    works in both)."""
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(url)
    config = {"host": p.get("host", "localhost"), "port": int(p.get("port", 5432)), "user": p.get("user"),
              "database": p.get("dbname"), "password": p.get("password")}
    if p.get("sslmode") in ("require", "verify-ca", "verify-full"):
        config["ssl"] = {"rejectUnauthorized": False}
    return config


def node_script(body: str) -> str:
    """A CommonJS script running `body` (an async function body) with `fields` (the client),
    `client` (a connected node-postgres Client, from PG_CONFIG) and `out(obj)` (JSON on stdout)."""
    return f"""
const fields = require({json.dumps(str(NODE_CLIENT))});
const {{ Client }} = require('pg');
const out = (o) => process.stdout.write(JSON.stringify(o));
const describe = (e) => ({{ name: e.name, code: e.code, message: e.message, hint: e.hint || null,
                           isMinno: e instanceof fields.MinnoFieldsError, isError: e instanceof Error }});
(async () => {{
  const client = process.env.PG_CONFIG ? new Client(JSON.parse(process.env.PG_CONFIG)) : null;
  if (client) await client.connect();
  try {{ {body} }} finally {{ if (client) await client.end(); }}
}})().catch((e) => {{ process.stderr.write(String(e && e.stack || e)); process.exit(3); }});
"""


def run_node(node, url: str | None, body: str, kek: crypto.MasterKey | None = None, **env: str):
    """node_script(body) through the `node` fixture; returns what it printed, parsed."""
    full_env = dict(env)
    if url is not None:
        full_env["PG_CONFIG"] = json.dumps(node_config(url))
    if kek is not None:
        full_env["MINNO_MASTER_KEY"] = crypto.encode_key(kek.key)  # environment, never argv
    done = node(node_script(body), env=full_env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout else None


# ---------------------------------------------------------------------------------------------
# The vectors


def test_the_vectors_are_what_the_script_makes():
    done = subprocess.run([sys.executable, str(CLIENTS / "make_vectors.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def _vector_keyring() -> crypto.Keyring:
    kek = crypto.MasterKey(crypto.parse_master_key(VECTORS["master_key"], "vectors"), "vectors")
    assert kek.fingerprint == VECTORS["kek_fingerprint"]
    keys = []
    for k in VECTORS["keys"]:
        dek = None if k["encrypted_key"] is None else crypto.unwrap_dek(kek, k["encrypted_key"], k["key_number"])
        if dek is not None:
            assert dek == base64.b64decode(k["dek"])
            assert crypto.wrap_dek(kek, dek, k["key_number"], nonce=bytes.fromhex(k["wrap_nonce"])) == \
                k["encrypted_key"]
        keys.append(crypto.DataKey(str(k["key_number"]), k["key_number"], k["status"], dek))
    return crypto.Keyring(keys)


def test_python_client_against_the_vectors():
    ring = _vector_keyring()
    assert ring.active_key_number == 8
    for v in VECTORS["fields"]:
        where = (v["schema"], v["table"], v["column"], v["pk"])
        dek = ring.keys[v["key_number"]].key
        assert crypto.encrypt_field(dek, v["key_number"], *where, v["plaintext"],
                                    nonce=bytes.fromhex(v["nonce"])) == v["field"], v["name"]
        assert base64.b64decode(v["field"])[:5] == bytes.fromhex(v["aad"])[:5]
        assert ring.key_number(v["field"]) == v["key_number"]
        if v.get("decrypts", True):
            assert ring.decrypt_text(*where, v["field"]) == v["plaintext"], v["name"]
        else:
            with pytest.raises(crypto.FieldError) as info:
                ring.decrypt(*where, v["field"])
            assert info.value.code == "KEY_UNKNOWN"
    for v in VECTORS["negative_fields"]:
        with pytest.raises(crypto.FieldError) as info:
            ring.decrypt(v["schema"], v["table"], v["column"], v["pk"], v["field"])
        assert info.value.code == v["error"], v["name"]
    for v in VECTORS["negative_keys"]:
        kek = crypto.MasterKey(base64.b64decode(v.get("master_key", VECTORS["master_key"])), "vectors")
        with pytest.raises(crypto.MasterKeyError) as info:
            crypto.unwrap_dek(kek, v["encrypted_key"], v["key_number"])
        assert info.value.code == v["error"], v["name"]
    for v in VECTORS["negative_master_keys"]:
        with pytest.raises(crypto.MasterKeyError) as info:
            crypto.load_keyring(None, v["master_key"])
        assert info.value.code == v["error"] and v["master_key"] not in str(info.value), v["name"]


NODE_VECTOR_CHECK = f"""
const v = require({json.dumps(str(CLIENTS / "vectors.json"))});
const kek = fields.parseMasterKey(v.master_key);
const bad = [];
const expect = (ok, what) => {{ if (!ok) bad.push(what); }};
expect(fields.fingerprint(kek) === v.kek_fingerprint, 'fingerprint');
for (const k of v.keys) {{
  if (k.encrypted_key === null) continue;
  const dek = fields.unwrapDek(kek, k.encrypted_key, k.key_number);
  expect(dek.equals(Buffer.from(k.dek, 'base64')), 'unwrap ' + k.key_number);
  expect(fields.wrapDek(kek, dek, k.key_number, {{ nonce: Buffer.from(k.wrap_nonce, 'hex') }}) === k.encrypted_key,
         'wrap ' + k.key_number);
}}
const rows = v.keys.map((k) => ({{ key_number: k.key_number, status: k.status, encrypted_key: k.encrypted_key,
                                   kek_fingerprint: k.encrypted_key === null ? null : v.kek_fingerprint }}));
const ring = await fields.loadKeyring({{ query: async (sql) => {{ expect(sql === fields.KEYRING_SQL, 'sql');
                                                               return {{ rows }}; }} }}, v.master_key);
expect(ring.activeKeyNumber === 8, 'active key');
expect(!JSON.stringify(ring).includes(v.keys[2].dek), 'no key material in JSON');
let checked = 0;
for (const f of v.fields) {{
  const dek = Buffer.from(v.keys.find((k) => k.key_number === f.key_number).dek, 'base64');
  expect(fields.encryptField(dek, f.key_number, f.schema, f.table, f.column, f.pk, f.plaintext,
                             {{ nonce: Buffer.from(f.nonce, 'hex') }}) === f.field, 'encrypt ' + f.name);
  expect(ring.keyNumber(f.field) === f.key_number, 'keyNumber ' + f.name);
  if (f.decrypts === false) {{
    try {{ ring.decrypt(f.schema, f.table, f.column, f.pk, f.field); bad.push('pending decrypts'); }}
    catch (e) {{ expect(e.code === 'KEY_UNKNOWN', 'pending ' + e.code); }}
  }} else {{
    expect(ring.decrypt(f.schema, f.table, f.column, f.pk, f.field) === f.plaintext, 'decrypt ' + f.name);
  }}
  const mine = ring.encrypt(f.schema, f.table, f.column, f.pk, f.plaintext);  // random nonce, active key
  expect(mine !== f.field && ring.decrypt(f.schema, f.table, f.column, f.pk, mine) === f.plaintext, 'roundtrip');
  checked++;
}}
for (const n of v.negative_fields) {{
  try {{ ring.decrypt(n.schema, n.table, n.column, n.pk, n.field); bad.push('no error: ' + n.name); }}
  catch (e) {{ expect(e instanceof fields.FieldError && e.code === n.error && !e.message.includes(n.field),
                      n.name + ': ' + e.code); checked++; }}
}}
for (const n of v.negative_keys) {{
  const other = fields.parseMasterKey(n.master_key || v.master_key);
  try {{ fields.unwrapDek(other, n.encrypted_key, n.key_number); bad.push('no error: ' + n.name); }}
  catch (e) {{ expect(e instanceof fields.MasterKeyError && e.code === n.error, n.name + ': ' + e.code); checked++; }}
}}
for (const n of v.negative_master_keys) {{
  try {{ fields.parseMasterKey(n.master_key); bad.push('no error: ' + n.name); }}
  catch (e) {{ expect(e.code === n.error && !e.message.includes(n.master_key), n.name); checked++; }}
}}
out({{ bad, checked }});
"""


def test_node_client_against_the_vectors(node):
    result = run_node(node, None, NODE_VECTOR_CHECK)
    assert result["bad"] == []
    assert result["checked"] == len(VECTORS["fields"]) + len(VECTORS["negative_fields"]) + \
        len(VECTORS["negative_keys"]) + len(VECTORS["negative_master_keys"])


def test_the_node_client_is_commonjs_and_imports_as_esm_with_named_exports(node, tmp_path):
    (tmp_path / "app.mjs").write_text(
        f"import {{ loadKeyring, parseMasterKey, FieldError }} from {json.dumps(NODE_CLIENT.as_uri())};\n"
        f"import fields from {json.dumps(NODE_CLIENT.as_uri())};\n"
        "console.log(JSON.stringify([typeof loadKeyring, typeof parseMasterKey, typeof FieldError, "
        "fields.loadKeyring === loadKeyring]));\n")
    done = subprocess.run(["node", str(tmp_path / "app.mjs")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["function", "function", "function", True]
    source = NODE_CLIENT.read_text(encoding="utf-8")
    assert [line for line in source.splitlines() if "require(" in line and "require('node:crypto')" not in line
            and not line.lstrip().startswith(("*", "//"))] == []  # no dependency beyond node:crypto


TYPED_APP = """
import { loadKeyring, parseMasterKey, FieldError, Keyring, Queryable } from './minno-fields.cjs';
export async function read(db: Queryable, userId: string, field: string): Promise<string> {
  const ring: Keyring = await loadKeyring(db, parseMasterKey('x'));
  const n: number = ring.keyNumber(field);
  try { return ring.decrypt('assistant', 'user_tokens', 'google_access_token', userId, field) + n; }
  catch (e) { if (e instanceof FieldError && e.code === 'FIELD_AUTH') return ''; throw e; }
}
"""


def test_the_typings_type_check_an_application(node, tmp_path):
    """TypeScript (tests/node) checks an application against minno-fields.d.cts; a wrong call is an error."""
    for name in ("minno-fields.cjs", "minno-fields.d.cts"):
        (tmp_path / name).write_text((NODE_CLIENT.parent / name).read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "node-stub.d.ts").write_text("declare class Buffer extends Uint8Array {}\n")  # no @types/node here
    (tmp_path / "good.cts").write_text(TYPED_APP)
    (tmp_path / "bad.cts").write_text(TYPED_APP.replace("ring.keyNumber(field)", "ring.keyNumber(42)")
                                      .replace("e.code === 'FIELD_AUTH'", "e.code === 'NOPE'"))
    script = """
const ts = require('typescript');
const check = (file) => {
  const program = ts.createProgram([file, 'node-stub.d.ts'], { strict: true, noEmit: true, module: ts.ModuleKind.Node16,
    moduleResolution: ts.ModuleResolutionKind.Node16, target: ts.ScriptTarget.ES2020, types: [] });
  return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, ' '));
};
process.stdout.write(JSON.stringify({ good: check('good.cts'), bad: check('bad.cts') }));
"""
    done = node(script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["good"] == []
    assert len(result["bad"]) == 2, result["bad"]


def test_minnoctl_crypto_imports_and_works_without_the_cli(migrated, kek):
    """An application imports minnoctl.crypto alone: no typer, rich or click on its path, and the
    app API (load_keyring from a psycopg connection and the base64 master key) reads a token."""
    with psycopg.connect(migrated, autocommit=True) as conn:
        ring = tokens.ensure_active_key(conn, kek)
        field = ring.encrypt("assistant", "user_tokens", "google_access_token", "U1", "ya29.token")
        conn.execute("INSERT INTO assistant.user_tokens (user_id, google_access_token) VALUES ('U1', %s)", (field,))
    script = """
import json, os, sys
from minnoctl import crypto
import psycopg
with psycopg.connect(os.environ["URL"]) as conn:
    ring = crypto.load_keyring(conn, os.environ["MINNO_MASTER_KEY"])
    (value,) = conn.execute("SELECT google_access_token FROM assistant.user_tokens WHERE user_id = 'U1'").fetchone()
    plain = ring.decrypt_text("assistant", "user_tokens", "google_access_token", "U1", value)
    mine = ring.encrypt("assistant", "user_tokens", "google_access_token", "U1", "new")
    try:
        ring.decrypt("assistant", "user_tokens", "google_refresh_token", "U1", value)
        code = None
    except crypto.FieldError as exc:
        code = exc.code
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"typer", "rich", "click", "minnoctl"})
print(json.dumps([plain, ring.key_number(mine) == ring.active_key_number, code, loaded,
                  sorted(m for m in sys.modules if m.startswith("minnoctl"))]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env={"URL": migrated, "MINNO_MASTER_KEY": crypto.encode_key(kek.key),
                               "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    plain, same_key, code, loaded, minnoctl_modules = json.loads(done.stdout)
    assert (plain, same_key, code, loaded) == ("ya29.token", True, "FIELD_AUTH", ["minnoctl"])
    assert minnoctl_modules == ["minnoctl", "minnoctl.crypto", "minnoctl.errors"]


# ---------------------------------------------------------------------------------------------
# Live database, both servers: minnoctl and Node read each other's fields


def _workspace(url: str, team: str = "T42") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES (%s, 'answer')", (team,))


def test_token_put_then_node_decrypts_it(cli, migrated, kek, node):
    _workspace(migrated)
    secret = f"xoxb-put-by-minnoctl-{uuid.uuid4().hex}"
    put = cli("token", "put", "--workspace", "T42", "--provider", "slack", "--access-token-file", "-",
              env=env_for(migrated, kek), input=secret + "\n")
    assert put.exit_code == 0, put.stderr
    result = run_node(node, migrated, """
const ring = await fields.loadKeyring(client, process.env.MINNO_MASTER_KEY);
const { rows } = await client.query('SELECT id, access_token_encrypted FROM minno.oauth_tokens');
const r = rows[0];
let moved;
try { ring.decrypt('minno', 'oauth_tokens', 'refresh_token_encrypted', r.id, r.access_token_encrypted); }
catch (e) { moved = e.code; }
out({ n: rows.length, token: ring.decrypt('minno', 'oauth_tokens', 'access_token_encrypted', r.id,
                                          r.access_token_encrypted),
      key: ring.keyNumber(r.access_token_encrypted), active: ring.activeKeyNumber, moved });
""", kek)
    assert result == {"n": 1, "token": secret, "key": result["active"], "active": result["active"],
                      "moved": "FIELD_AUTH"}


def test_a_wrong_master_key_fails_in_node_when_the_keyring_loads(migrated, kek, node):
    with psycopg.connect(migrated, autocommit=True) as conn:
        tokens.ensure_active_key(conn, kek)
    other = crypto.MasterKey(crypto.generate_key(), "other")
    result = run_node(node, migrated, """
try { await fields.loadKeyring(client, process.env.MINNO_MASTER_KEY); out(null); }
catch (e) { out(describe(e)); }
""", other)
    assert result["code"] == "WRONG_MASTER_KEY" and result["name"] == "MasterKeyError" and result["isMinno"]
    assert crypto.encode_key(other.key) not in result["message"]


NODE_WRITES = """
const ring = await fields.loadKeyring(client, process.env.MINNO_MASTER_KEY);
const ws = (await client.query("SELECT id FROM minno.workspaces WHERE slack_team_id = 'T42'")).rows[0].id;
const tid = (await client.query('SELECT gen_random_uuid() AS id')).rows[0].id;
const plain = JSON.parse(process.env.PLAIN);
await client.query('INSERT INTO minno.oauth_tokens (id, workspace_id, provider, access_token_encrypted, ' +
  'refresh_token_encrypted) VALUES ($1, $2, $3, $4, $5)',
  [tid, ws, 'notion', ring.encrypt('minno', 'oauth_tokens', 'access_token_encrypted', tid, plain.access),
   ring.encrypt('minno', 'oauth_tokens', 'refresh_token_encrypted', tid, plain.refresh)]);
const enc = (c) => ring.encrypt('assistant', 'user_tokens', c, 'U-node', plain[c]);
await client.query('INSERT INTO assistant.user_tokens (user_id, google_access_token, google_refresh_token, ' +
  'slack_access_token, slack_refresh_token) VALUES ($1, $2, $3, $4, $5)',
  ['U-node', enc('google_access_token'), enc('google_refresh_token'), enc('slack_access_token'),
   enc('slack_refresh_token')]);
out({ tid, key: ring.activeKeyNumber });
"""

NODE_READS = """
const ring = await fields.loadKeyring(client, process.env.MINNO_MASTER_KEY);
const t = (await client.query('SELECT id, access_token_encrypted, refresh_token_encrypted FROM minno.oauth_tokens ' +
                              'WHERE id = $1', [process.env.TID])).rows[0];
const u = (await client.query("SELECT * FROM assistant.user_tokens WHERE user_id = 'U-node'")).rows[0];
const got = { access: ring.decrypt('minno', 'oauth_tokens', 'access_token_encrypted', t.id, t.access_token_encrypted),
              refresh: ring.decrypt('minno', 'oauth_tokens', 'refresh_token_encrypted', t.id,
                                    t.refresh_token_encrypted) };
for (const c of JSON.parse(process.env.COLUMNS)) got[c] = ring.decrypt('assistant', 'user_tokens', c, 'U-node', u[c]);
const keys = [t.access_token_encrypted, u.google_access_token].map((f) => ring.keyNumber(f));
out({ got, keys, active: ring.activeKeyNumber });
"""


def test_node_written_fields_pass_verify_and_rotate_and_node_reads_them_after(cli, migrated, kek, node):
    _workspace(migrated)
    with psycopg.connect(migrated, autocommit=True) as conn:
        tokens.ensure_active_key(conn, kek)
    plain = {"access": "secret_notion_access_ö", "refresh": "secret_notion_refresh",
             **{c: f"{c}-value-{uuid.uuid4().hex}" for c in USER_TOKEN_COLUMNS}}
    wrote = run_node(node, migrated, NODE_WRITES, kek, PLAIN=json.dumps(plain))
    env = env_for(migrated, kek)
    verify = cli("token", "verify", env=env)
    assert verify.exit_code == 0, verify.stdout + verify.stderr
    assert "all 6 encrypted field(s) decrypt" in verify.stderr
    # the application keeps its keyring across the rotation: its old key is retired, so its next
    # write fails with MK001 (reload and write again), and its reads of new fields with KEY_UNKNOWN
    rotate = cli("token", "rotate", "--format", "json", env=env)
    assert rotate.exit_code == 0, rotate.stderr
    doc = json.loads(rotate.stdout)
    assert doc["status"] == "done" and wrote["key"] in doc["retired"] and doc["active"] != wrote["key"]
    assert doc["reencrypted"]["minno.oauth_tokens.access_token_encrypted"] == 1
    assert all(doc["reencrypted"][f"assistant.user_tokens.{c}"] == 1 for c in USER_TOKEN_COLUMNS)
    read = run_node(node, migrated, NODE_READS, kek, TID=wrote["tid"], COLUMNS=json.dumps(USER_TOKEN_COLUMNS))
    assert read["got"] == {"access": plain["access"], "refresh": plain["refresh"],
                           **{c: plain[c] for c in USER_TOKEN_COLUMNS}}
    assert read["keys"] == [doc["active"], doc["active"]] == [read["active"]] * 2
    assert cli("token", "verify", env=env).exit_code == 0


STALE_KEYRING = """
const ring = await fields.loadKeyring(client, process.env.MINNO_MASTER_KEY);
const write = (r) => client.query('INSERT INTO assistant.user_tokens (user_id, slack_access_token) VALUES ($1, $2) ' +
  'ON CONFLICT (user_id) DO UPDATE SET slack_access_token = EXCLUDED.slack_access_token',
  ['U-stale', r.encrypt('assistant', 'user_tokens', 'slack_access_token', 'U-stale', 'xoxp-1')]);
await write(ring);
process.stdout.write(JSON.stringify({ ready: ring.activeKeyNumber }) + '\\n');
await new Promise((resolve) => process.stdin.once('data', resolve));  // the rotation runs meanwhile
let stale = null;
try { await write(ring); } catch (e) { stale = { code: e.code, stale: fields.isStaleKeyError(e), message: e.message }; }
const fresh = await ring.reload();
await write(fresh);
const v = (await client.query("SELECT slack_access_token FROM assistant.user_tokens " +
                              "WHERE user_id = 'U-stale'")).rows[0];
let unknown = null;
try { ring.decrypt('assistant', 'user_tokens', 'slack_access_token', 'U-stale', v.slack_access_token); }
catch (e) { unknown = e.code; }
out({ stale, unknown, old: ring.activeKeyNumber, now: fresh.activeKeyNumber,
      value: fresh.decrypt('assistant', 'user_tokens', 'slack_access_token', 'U-stale', v.slack_access_token) });
"""


def test_a_stale_node_keyring_gets_mk001_and_reloads(migrated, kek, node):
    """A keyring loaded before a rotation: its write under the retired key is refused (MK001,
    isStaleKeyError), its read of a field under the new key is KEY_UNKNOWN, and reload() fixes both."""
    from minnoctl.config import load_settings

    with psycopg.connect(migrated, autocommit=True) as conn:
        tokens.ensure_active_key(conn, kek)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MINNO_"))}
    env |= {"NODE_PATH": str(ROOT / "tests" / "node" / "node_modules"), "PG_CONFIG": json.dumps(node_config(migrated)),
            "MINNO_MASTER_KEY": crypto.encode_key(kek.key)}
    proc = subprocess.Popen(["node", "-e", node_script(STALE_KEYRING)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready = json.loads(proc.stdout.readline() or "null")
        assert ready, proc.stderr.read() if proc.poll() is not None else "no output"
        rotated = tokens.rotate(load_settings(env={"MINNO_DATABASE_URL": migrated}), kek)
        assert rotated.status == "done" and ready["ready"] in rotated.retired
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["stale"]["code"] == "MK001" and doc["stale"]["stale"] is True and "retired" in doc["stale"]["message"]
    assert doc["unknown"] == "KEY_UNKNOWN" and doc["now"] == rotated.active != doc["old"]
    assert doc["value"] == "xoxp-1"


# ---------------------------------------------------------------------------------------------
# The guard refuses what is not an encrypted field (minno/0007)

ENCRYPTED = [(m.schema, e.table, e.column, e.pk) for m in __import__("minnoctl.modules").modules.MODULES
             for e in m.encrypted]
NOT_FIELDS = {
    "a plaintext token": "ya29.a0AfH6SMBx-plaintext-token-value",
    "base64 of a plaintext token": base64.b64encode(b"xoxb-12345678901234567890123456789012345").decode(),
    "base64 too short for a field": base64.b64encode(bytes([1, 0, 0, 0, 1]) + bytes(27)).decode(),
    "a field with a line break": "AQAAAAEA\n" + base64.b64encode(bytes(40)).decode(),
    "a field without its padding": base64.b64encode(bytes([1]) + bytes(34)).decode().rstrip("="),
    "an empty string": "",
}


def test_every_encrypted_column_refuses_what_is_not_a_field(migrated, kek):
    """The guard is a BEFORE trigger: it runs before the table's own constraints, so a one-column
    INSERT shows its answer for every encrypted column of every module."""
    with psycopg.connect(migrated, autocommit=True) as conn:
        ring = tokens.ensure_active_key(conn, kek)
        for schema, table, column, _pk in ENCRYPTED:
            label = f"{schema}.{table}.{column}"
            for what, value in NOT_FIELDS.items():
                with pytest.raises(psycopg.Error) as info:
                    conn.execute(f'INSERT INTO "{schema}"."{table}" ("{column}") VALUES (%s)', (value,))
                err = info.value
                assert err.sqlstate == "MK002", (label, what, err)
                message = err.diag.message_primary
                assert message.startswith(f"{label}: the value is not an encrypted field"), message
                assert LIBRARIES in message, message
                if value:
                    assert value not in str(err) and value[:12] not in str(err), (label, what)
        # NULL (no token) passes, and so does a field of the active key; an UPDATE writing
        # plaintext is refused as an INSERT is
        slack = ring.encrypt("assistant", "user_tokens", "slack_access_token", "U-ok", "xoxp-real")
        conn.execute("INSERT INTO assistant.user_tokens (user_id, google_access_token, slack_access_token) "
                     "VALUES ('U-ok', NULL, %s)", (slack,))
        field = ring.encrypt("assistant", "user_tokens", "google_access_token", "U-ok", "ya29.real")
        conn.execute("UPDATE assistant.user_tokens SET google_access_token = %s WHERE user_id = 'U-ok'", (field,))
        with pytest.raises(psycopg.Error) as info:
            conn.execute("UPDATE assistant.user_tokens SET google_access_token = 'ya29.plain' WHERE user_id = 'U-ok'")
        assert info.value.sqlstate == "MK002"
        assert conn.execute("SELECT google_access_token FROM assistant.user_tokens").fetchone()[0] == field


def test_spec_002_store_user_tokens_with_plaintext_fails_in_node_postgres(migrated, node):
    """The document's own statement with its plaintext tokens, through node-postgres with the
    module's search_path: refused with MK002, the column and the client library named."""
    params = ["U-spec", "ya29.plain-google-access", "1//plain-google-refresh", None, "Bearer", "email", None, None,
              None, None, None, None, None, None]
    result = run_node(node, migrated, """
await client.query('SET search_path = assistant, minno, public');
try { await client.query(process.env.SQL, JSON.parse(process.env.PARAMS)); out({ stored: true }); }
catch (e) { out(describe(e)); }
const n = (await client.query('SELECT count(*)::int AS n FROM user_tokens')).rows[0].n;
process.stderr.write(String(n));
""", SQL=store_user_tokens_sql(), PARAMS=json.dumps(params))
    assert result["code"] == "MK002", result
    assert result["message"].startswith("assistant.user_tokens.google_access_token: the value is not an encrypted")
    assert LIBRARIES in result["message"] and "ya29" not in result["message"] and "plain" not in result["message"]
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM assistant.user_tokens").fetchone()[0] == 0


# ---------------------------------------------------------------------------------------------
# Plaintext stored before minno/0007: reported, named, skipped — never lost


def _store_legacy_plaintext(url: str, rows: list[tuple[str, str | None, str | None]]) -> None:
    """What an application stored before minno/0007: written past the guard as only a superuser
    can (replica mode skips the triggers)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO assistant.user_tokens (user_id, google_access_token, slack_access_token) "
                            "VALUES (%s, %s, %s)", rows)


def test_legacy_plaintext_is_reported_by_health_named_by_verify_and_skipped_by_rotate(cli, migrated, kek):
    from test_health import check, run

    env = env_for(migrated, kek)
    _workspace(migrated)
    assert cli("token", "put", "--workspace", "T42", "--provider", "slack", "--access-token-file", "-",
               env=env, input="xoxb-encrypted").exit_code == 0
    legacy = [("U-old-1", "ya29.legacy-google-1", "xoxp-legacy-slack-1"), ("U-old-2", "ya29.legacy-google-2", None)]
    _store_legacy_plaintext(migrated, legacy)
    secrets = [v for r in legacy for v in r[1:] if v]

    code, doc = run(cli, migrated, "--only", "key_fields")
    c = check(doc, "key_fields")
    assert code == 1 and c["status"] == "WARNING", c
    assert c["value"].startswith("plaintext, not encrypted fields:") and "(3 in all)" in c["value"]
    assert "assistant.user_tokens.google_access_token 2" in c["value"]
    assert "assistant.user_tokens.slack_access_token 1" in c["value"]
    assert "minnoctl.crypto" in c["hint"] and not any(s in json.dumps(doc) for s in secrets)

    verify = cli("token", "verify", "--format", "json", env=env)
    assert verify.exit_code == ExitCode.PARTIAL, verify.stderr
    report = json.loads(verify.stdout)
    assert [(r["column"], r["row"]) for r in report] == [("assistant.user_tokens.google_access_token", "2 rows"),
                                                         ("assistant.user_tokens.slack_access_token", "1 row")]
    assert all("not encrypted fields" in r["reason"] and "minno-fields.cjs" in r["reason"] for r in report)
    assert "3 of 4 encrypted field(s) failed" in verify.stderr
    assert not any(s in verify.stdout + verify.stderr for s in secrets)

    with psycopg.connect(migrated) as conn:
        old = conn.execute("SELECT key_number FROM minno.encryption_keys WHERE status = 'active'").fetchone()[0]
    rotate = cli("token", "rotate", "--format", "json", env=env)
    assert rotate.exit_code == ExitCode.PARTIAL, rotate.stderr
    doc = json.loads(rotate.stdout)
    assert doc["status"] == "failures" and doc["retired"] == [old]  # plaintext keeps no old key alive
    assert doc["reencrypted"]["minno.oauth_tokens.access_token_encrypted"] == 1
    assert doc["reencrypted"]["assistant.user_tokens.google_access_token"] == 0
    assert [f["row"] for f in doc["failures"]] == ["2 rows", "1 row"]
    assert "left as they are" in rotate.stderr and not any(s in rotate.stdout + rotate.stderr for s in secrets)
    with psycopg.connect(migrated) as conn:  # nothing lost, nothing changed
        assert conn.execute("SELECT user_id, google_access_token, slack_access_token FROM assistant.user_tokens "
                            "ORDER BY user_id").fetchall() == legacy
        # an update of a legacy row's other columns still works; a new plaintext value does not
        conn.execute("UPDATE assistant.user_tokens SET google_scope = 'email' WHERE user_id = 'U-old-1'")
        with pytest.raises(psycopg.Error) as info:
            conn.execute("UPDATE assistant.user_tokens SET google_access_token = 'ya29.new' WHERE user_id = 'U-old-1'")
        assert info.value.sqlstate == "MK002"
        conn.rollback()
        # the application stores them again, encrypted: every check is clean
        ring = crypto.load_keyring(conn, kek)
        for user, google, slack in legacy:
            conn.execute("UPDATE assistant.user_tokens SET google_access_token = %s, slack_access_token = %s "
                         "WHERE user_id = %s", tuple(
                             None if v is None else ring.encrypt("assistant", "user_tokens", c, user, v)
                             for c, v in (("google_access_token", google), ("slack_access_token", slack))) + (user,))
        conn.commit()
    assert run(cli, migrated, "--only", "key_fields")[0] == 0
    assert cli("token", "verify", env=env).exit_code == 0


def test_the_rollback_restores_the_guard_of_0006_exactly(cli, database):
    def body() -> str:
        with psycopg.connect(database) as conn:
            return conn.execute("SELECT prosrc FROM pg_proc WHERE oid = 'minno.reject_retired_field_keys'::regproc"
                                ).fetchone()[0]

    def file_body(name: str) -> str:
        text = (ROOT / "migrations" / "minno" / name).read_text(encoding="utf-8")
        return text.split("AS $$", 1)[1].split("$$;", 1)[0]

    env = {"MINNO_DATABASE_URL": database}
    assert cli("db", "init", "--modules", "minno", env=env).exit_code == 0
    assert body() == file_body("0007_refuse_plaintext_fields.sql")
    back = cli("migrate", "rollback", "--steps", "1", "--yes", env=env)
    assert back.exit_code == 0 and "minno/0007_refuse_plaintext_fields" in back.stdout + back.stderr, back.stderr
    assert body() == file_body("0006_key_row_share_lock.sql")
    with psycopg.connect(database) as conn:  # EXECUTE stays revoked from PUBLIC, as 0006 left it
        assert conn.execute("SELECT has_function_privilege('public', 'minno.reject_retired_field_keys()', "
                            "'EXECUTE')").fetchone()[0] is False
    assert cli("migrate", env=env).exit_code == 0
    assert body() == file_body("0007_refuse_plaintext_fields.sql")


def test_the_wheel_ships_the_clients_the_readme_points_at(tmp_path):
    import zipfile

    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("minnoctl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("FORMAT.md", "vectors.json", "make_vectors.py", "node/minno-fields.cjs", "node/minno-fields.d.cts"):
        assert f"minnoctl/clients/{name}" in names, name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "minnoctl/clients/FORMAT.md" in readme and "minnoctl/clients/node/minno-fields.cjs" in readme
    assert "os.path.dirname(minnoctl.__file__), 'clients', 'node'" in readme


def test_a_backup_with_legacy_plaintext_restores_it(cli, migrated, kek, tmp_path):
    """pg_dump creates triggers after the data, so the guard does not refuse the plaintext rows a
    database held before minno/0007: a restore (into a new database, and --clean) keeps them."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    legacy = [("U-old-1", "ya29.legacy-google-1", "xoxp-legacy-slack-1")]
    _store_legacy_plaintext(migrated, legacy)
    env = {**env_for(migrated, kek), "MINNO_BACKUP_DIR": str(tmp_path)}
    made = cli("backup", "create", "--output-format", "json", env=env)
    assert made.exit_code == 0, made.stderr
    backup = json.loads(made.stdout)["file"]
    target = f"r_{uuid.uuid4().hex[:10]}"
    params = conninfo_to_dict(migrated)
    try:
        restored = cli("backup", "restore", backup, "--into", target, env=env)
        assert restored.exit_code == 0, restored.stderr
        with psycopg.connect(make_conninfo("", **{**params, "dbname": target})) as conn:
            assert conn.execute("SELECT user_id, google_access_token, slack_access_token FROM assistant.user_tokens"
                                ).fetchall() == legacy
    finally:
        with psycopg.connect(make_conninfo("", **{**params, "dbname": "postgres"}), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
    clean = cli("backup", "restore", backup, "--clean", "--yes", env=env)
    assert clean.exit_code == 0, clean.stderr
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT user_id, google_access_token, slack_access_token FROM assistant.user_tokens"
                            ).fetchall() == legacy


def test_token_put_for_a_user_is_what_spec_002_reads_and_node_decrypts(cli, migrated, kek, node):
    """`token put --user`: a user's Google or Slack token in assistant.user_tokens, the other
    provider kept, readable by the Node client; bad input is one line."""
    env = env_for(migrated, kek)
    google, slack = f"ya29.{uuid.uuid4().hex}", f"xoxp-{uuid.uuid4().hex}"
    put = cli("token", "put", "--user", "U-put", "--provider", "Google", "--access-token-file", "-",
              "--scopes", "email, profile", "--expires-at", "2030-01-01T00:00:00Z", "--format", "json",
              env=env, input=google + "\n")
    assert put.exit_code == 0, put.stderr
    assert json.loads(put.stdout)[0] | {"key": 0} == {"user": "U-put", "provider": "google",
                                                     "expires_at": "2030-01-01T00:00:00+00:00",
                                                     "scopes": "email profile",
                                                     "key": 0, "updated": False}
    refresh = Path("refresh.txt")  # the test's own empty directory
    refresh.write_text("slack-refresh\n")
    put = cli("token", "put", "--user", "U-put", "--provider", "slack", "--access-token-file", "-",
              "--refresh-token-file", str(refresh), "--scopes", "chat:write,users:read", env=env, input=slack)
    assert put.exit_code == 0, put.stderr
    assert google not in put.stdout + put.stderr and slack not in put.stdout + put.stderr
    with psycopg.connect(migrated) as conn:
        row = conn.execute("SELECT google_scope, slack_scope, google_expires_at::text FROM assistant.user_tokens"
                           ).fetchone()
        assert row == ("email profile", "chat:write,users:read", "2030-01-01 00:00:00")
        assert google not in conn.execute("SELECT u::text FROM assistant.user_tokens u").fetchone()[0]
    result = run_node(node, migrated, """
const ring = await fields.loadKeyring(client, process.env.MINNO_MASTER_KEY);
const u = (await client.query("SELECT * FROM assistant.user_tokens WHERE user_id = 'U-put'")).rows[0];
const d = (c) => u[c] === null ? null : ring.decrypt('assistant', 'user_tokens', c, u.user_id, u[c]);
out([d('google_access_token'), d('google_refresh_token'), d('slack_access_token'), d('slack_refresh_token')]);
""", kek)
    assert result == [google, None, slack, "slack-refresh"]
    assert cli("token", "verify", env=env).exit_code == 0
    for args, phrase in ((["--user", "U1", "--provider", "notion"], "google and slack tokens only"),
                         (["--user", "U1", "--workspace", "T1", "--provider", "slack"], "one of them"),
                         (["--provider", "slack"], "one of them"),
                         (["--user", "U" * 300, "--provider", "slack"], "too long")):
        bad = cli("token", "put", *args, "--access-token-file", "-", env=env, input="secret-tok-123")
        assert bad.exit_code == ExitCode.USAGE, bad.stderr
        assert phrase in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        assert "secret-tok-123" not in bad.stderr


def test_token_put_for_a_user_without_the_assistant_module_is_one_line(cli, database, kek):
    env = env_for(database, kek)
    assert cli("db", "init", "--modules", "minno", env=env).exit_code == 0
    bad = cli("token", "put", "--user", "U1", "--provider", "slack", "--access-token-file", "-", env=env, input="t")
    assert bad.exit_code == 1 and "minnoctl db init --modules assistant" in bad.stderr, bad.stderr


def test_health_names_plaintext_and_an_unfinished_rotation_together(cli, migrated, kek, any_server):
    if any_server.name == "pg15":
        pytest.skip("one server is enough for the keyring")
    from test_health import check, run
    from test_tokens import fill

    fill(migrated, kek, 100)
    _store_legacy_plaintext(migrated, [("U-old-1", "ya29.legacy-google-1", None)])
    first = cli("token", "rotate", "--batch-size", "1", "--max-runtime", "0.1", env=env_for(migrated, kek))
    assert first.exit_code == ExitCode.PARTIAL
    code, doc = run(cli, migrated, "--only", "key_fields")
    c = check(doc, "key_fields")
    assert code == 1 and "assistant.user_tokens.google_access_token 1 (1 in all)" in c["value"], c
    assert "still on key 1 (decrypt only)" in c["value"], c
