"""`minnoctl token`: storing, listing, verifying and rotating encrypted tokens on a live database,
with real processes for kill -9 and a concurrent application writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from minnoctl import crypto, tokens
from minnoctl.config import load_settings
from minnoctl.errors import ExitCode

COLUMNS = ("access_token_encrypted", "refresh_token_encrypted")


def env_for(url: str, kek: crypto.MasterKey, **extra: str) -> dict[str, str]:
    return {"MINNO_DATABASE_URL": url, "MINNO_MASTER_KEY": crypto.encode_key(kek.key), **extra}


def fill(url: str, kek: crypto.MasterKey, workspaces: int, providers: int = 3) -> dict[tuple[str, str], str]:
    """Workspaces with encrypted tokens; returns {(token id, column): plaintext}."""
    plain: dict[tuple[str, str], str] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        ring = tokens.ensure_active_key(conn, kek)
        rows = []
        for w in range(workspaces):
            ws = uuid.uuid4()
            conn.execute("INSERT INTO minno.workspaces (id, slack_team_id, slack_team_name) VALUES (%s, %s, %s)",
                         (ws, f"T{w:06d}", f"team {w}"))
            for p in range(providers):
                tid = uuid.uuid4()
                values = {c: f"{c}-{w}-{p}-{uuid.uuid4().hex}" for c in COLUMNS}
                for c, v in values.items():
                    plain[(str(tid), c)] = v
                rows.append((tid, ws, f"prov{p}", *(ring.encrypt("minno", "oauth_tokens", c, tid, values[c])
                                                    for c in COLUMNS)))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO minno.oauth_tokens (id, workspace_id, provider, access_token_encrypted, "
                            "refresh_token_encrypted) VALUES (%s, %s, %s, %s, %s)", rows)
    return plain


def decrypt_all(url: str, kek: crypto.MasterKey) -> tuple[dict[tuple[str, str], str], set[int]]:
    with psycopg.connect(url) as conn:
        ring = crypto.Keyring.load(conn, kek)
        out, used = {}, set()
        for tid, *values in conn.execute(f"SELECT id, {', '.join(COLUMNS)} FROM minno.oauth_tokens"):
            for c, v in zip(COLUMNS, values):
                if v is None:
                    continue
                used.add(crypto.field_key_number(v))
                out[(str(tid), c)] = ring.decrypt("minno", "oauth_tokens", c, tid, v).decode()
        return out, used


def key_status(url: str) -> dict[int, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT key_number, status FROM minno.encryption_keys").fetchall())


def spawn(url: str, kek: crypto.MasterKey, *args: str) -> subprocess.Popen:
    env = dict(os.environ, **env_for(url, kek))
    return subprocess.Popen([sys.executable, "-m", "minnoctl", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def fields_on(url: str, number: int) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM minno.oauth_tokens WHERE "
                            f"{tokens.header_sql('access_token_encrypted')} = %s", (number,)).fetchone()[0]


def test_put_list_keys_and_no_plaintext_anywhere(cli, migrated, kek):
    env = env_for(migrated, kek)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T42', 'answer')")
    secret = "xoxb-this-is-the-secret-token"
    put = cli("token", "put", "--workspace", "T42", "--provider", "Slack", "--access-token-file", "-",
              "--expires-at", "2030-01-01T00:00:00Z", "--scopes", "chat:write, users:read", env=env,
              input=secret + "\n")
    assert put.exit_code == 0, put.stderr
    again = cli("token", "put", "--workspace", "T42", "--provider", "slack", "--access-token-file", "-",
                env=env, input=secret + "-2")
    assert again.exit_code == 0 and "yes" in again.stdout.split()  # an upsert: updated (booleans yes/no in tables)
    listed = cli("token", "list", "--format", "json", env=env)
    rows = json.loads(listed.stdout)
    assert rows == [{"workspace": "T42", "provider": "slack", "expires_at": None, "scopes": "",
                     "key": rows[0]["key"], "has_refresh_token": False}]
    keys = json.loads(cli("token", "keys", "--format", "json", env=env).stdout)
    assert keys[0]["status"] == "active" and keys[0]["fields"] == 1
    everything = "".join(r.stdout + r.stderr for r in (put, again, listed))
    assert secret not in everything
    with psycopg.connect(migrated) as conn:
        assert secret not in conn.execute("SELECT t::text FROM minno.oauth_tokens t").fetchone()[0]
        assert "answer" in conn.execute("SELECT w::text FROM minno.workspaces w").fetchone()[0]
        out, _ = decrypt_all(migrated, kek)
    assert list(out.values()) == [secret + "-2"]


@pytest.mark.parametrize("args, code, phrase", [
    (["--workspace", "T404", "--provider", "slack", "--access-token-file", "-"], ExitCode.NOT_FOUND, "does not exist"),
    (["--workspace", "T42", "--provider", "slack", "--access-token-file", "/nope"], ExitCode.USAGE, "cannot read"),
    (["--workspace", "T42", "--provider", "slack", "--access-token-file", "-", "--expires-at", "soon"],
     ExitCode.USAGE, "not an ISO 8601 time"),
])
def test_put_bad_input(cli, migrated, kek, args, code, phrase):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T42', 'answer')")
    result = cli("token", "put", *args, env=env_for(migrated, kek), input="tok")
    assert result.exit_code == code, result.stderr
    assert phrase in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_and_wrong_master_keys_are_one_line_and_change_nothing(cli, migrated, kek):
    fill(migrated, kek, 3)
    before = key_status(migrated)
    missing = cli("token", "rotate", env={"MINNO_DATABASE_URL": migrated})
    assert missing.exit_code == ExitCode.CRYPTO
    assert "MINNO_MASTER_KEY" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    wrong = cli("token", "rotate", env=env_for(migrated, crypto.MasterKey(crypto.generate_key(), "x")))
    assert wrong.exit_code == ExitCode.CRYPTO and "nothing was changed" in wrong.stderr
    malformed = cli("token", "verify", env={"MINNO_DATABASE_URL": migrated, "MINNO_MASTER_KEY": "abc"})
    assert malformed.exit_code == ExitCode.CRYPTO and "abc" not in malformed.stderr
    assert key_status(migrated) == before


def test_rotate_on_empty_tables_makes_a_key_and_finishes(cli, migrated, kek):
    result = cli("token", "rotate", "--format", "json", env=env_for(migrated, kek))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "done" and doc["active"] is not None


def test_rotate_reencrypts_everything_verifies_and_retires_the_old_key(cli, migrated, kek):
    plain = fill(migrated, kek, 40)
    old = next(n for n, s in key_status(migrated).items() if s == "active")
    dry = cli("token", "rotate", "--dry-run", "--format", "json", env=env_for(migrated, kek))
    plan = json.loads(dry.stdout)["to_reencrypt"]
    assert sorted((p["column"], p["fields"]) for p in plan) == [
        ("minno.oauth_tokens.access_token_encrypted", 120), ("minno.oauth_tokens.refresh_token_encrypted", 120)]
    assert key_status(migrated) == {old: "active"}  # the dry run changed nothing
    result = cli("token", "rotate", "--batch-size", "17", "--format", "json", env=env_for(migrated, kek))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["retired"] == [old] and doc["reencrypted"]["minno.oauth_tokens.access_token_encrypted"] == 120
    out, used = decrypt_all(migrated, kek)
    assert out == plain and used == {doc["active"]}
    assert key_status(migrated)[old] == "retired"
    with psycopg.connect(migrated) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM minno.key_audit_log ORDER BY id")]
        audit = conn.execute("SELECT string_agg(details::text, ' ') FROM minno.key_audit_log").fetchone()[0]
    assert actions[-4:] == ["rotate-start", "fence", "retire", "rotate-done"]
    assert crypto.encode_key(kek.key) not in audit
    assert cli("token", "verify", env=env_for(migrated, kek)).exit_code == 0


def test_max_runtime_stops_with_partial_and_a_rerun_resumes(cli, migrated, kek):
    plain = fill(migrated, kek, 100)
    first = cli("token", "rotate", "--batch-size", "1", "--max-runtime", "0.1", "--format", "json",
                env=env_for(migrated, kek))
    assert first.exit_code == ExitCode.PARTIAL, first.stderr
    active = json.loads(first.stdout)["active"]
    assert fields_on(migrated, active) < 300
    second = cli("token", "rotate", "--format", "json", env=env_for(migrated, kek))
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["active"] == active  # resumed, no new key
    out, used = decrypt_all(migrated, kek)
    assert out == plain and used == {active}


def test_a_damaged_field_is_reported_and_keeps_its_key(cli, migrated, kek):
    fill(migrated, kek, 5)
    with psycopg.connect(migrated, autocommit=True) as conn:
        victim = conn.execute("SELECT id FROM minno.oauth_tokens ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("UPDATE minno.oauth_tokens SET access_token_encrypted = "
                     "overlay(access_token_encrypted placing 'AAAA' from 30 for 4) WHERE id = %s", (victim,))
    verify = cli("token", "verify", "--format", "json", env=env_for(migrated, kek))
    assert verify.exit_code == ExitCode.PARTIAL
    report = json.loads(verify.stdout)
    assert report == [{"column": "minno.oauth_tokens.access_token_encrypted", "row": str(victim),
                       "reason": report[0]["reason"]}]
    old = next(n for n, s in key_status(migrated).items() if s == "active")
    rotated = cli("token", "rotate", "--format", "json", env=env_for(migrated, kek))
    assert rotated.exit_code == ExitCode.PARTIAL
    doc = json.loads(rotated.stdout)
    assert [f["row"] for f in doc["failures"]] == [str(victim)] and doc["retired"] == []
    assert key_status(migrated)[old] == "decrypt_only"  # kept while the damaged field names it
    assert doc["reencrypted"]["minno.oauth_tokens.refresh_token_encrypted"] == 15


def test_retiring_a_key_in_use_or_the_active_key_is_refused(cli, migrated, kek):
    fill(migrated, kek, 2)
    active = next(n for n, s in key_status(migrated).items() if s == "active")
    refused = cli("token", "retire", str(active), env=env_for(migrated, kek))
    assert refused.exit_code == 1 and "active key" in refused.stderr
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("UPDATE minno.encryption_keys SET status = 'decrypt_only'")
    in_use = cli("token", "retire", str(active), env=env_for(migrated, kek))
    assert in_use.exit_code == 1 and "still used by 12 field(s)" in in_use.stderr
    assert key_status(migrated)[active] == "decrypt_only"


def test_master_rotation_rewraps_keys_and_leaves_data_byte_identical(cli, migrated, kek):
    plain = fill(migrated, kek, 5)
    with psycopg.connect(migrated) as conn:
        before = conn.execute("SELECT id, access_token_encrypted, refresh_token_encrypted FROM minno.oauth_tokens "
                              "ORDER BY id").fetchall()
    new = crypto.MasterKey(crypto.generate_key(), "new")
    result = cli("token", "rotate", "--master",
                 env=env_for(migrated, kek, MINNO_NEW_MASTER_KEY=crypto.encode_key(new.key)))
    assert result.exit_code == 0, result.stderr
    with psycopg.connect(migrated) as conn:
        after = conn.execute("SELECT id, access_token_encrypted, refresh_token_encrypted FROM minno.oauth_tokens "
                             "ORDER BY id").fetchall()
        with pytest.raises(crypto.MasterKeyError):
            crypto.Keyring.load(conn, kek)  # the old master key no longer opens anything
    assert after == before
    assert decrypt_all(migrated, new)[0] == plain


def test_a_second_rotation_is_refused_while_one_runs(migrated, kek, run_minnoctl):
    fill(migrated, kek, 100)
    first = spawn(migrated, kek, "token", "rotate", "--batch-size", "2")
    try:
        wait_until(lambda: any(s == "decrypt_only" for s in key_status(migrated).values()))
        second = run_minnoctl("token", "rotate", env=env_for(migrated, kek))
        assert second.returncode == ExitCode.LOCK_HELD
        assert "token-rotate lock is held by minnoctl token-rotate pid=" in second.stderr
    finally:
        first.kill()
        first.wait()


def test_kill_9_mid_rotation_loses_nothing_and_a_rerun_completes(migrated, kek, run_minnoctl):
    plain = fill(migrated, kek, 150)
    victim = spawn(migrated, kek, "token", "rotate", "--batch-size", "3")
    new = None

    def started() -> bool:
        nonlocal new
        status = key_status(migrated)  # one snapshot: the active key is the new one once an old one is decrypt-only
        if not any(s == "decrypt_only" for s in status.values()):
            return False
        new = next(n for n, s in status.items() if s == "active")
        return fields_on(migrated, new) > 30

    wait_until(started)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 0 < fields_on(migrated, new) < 450  # killed half way
    out, used = decrypt_all(migrated, kek)
    assert out == plain and len(used) == 2  # every field still decrypts, on the old key or the new
    rerun = run_minnoctl("token", "rotate", "--format", "json", env=env_for(migrated, kek))
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["active"] == new
    out, used = decrypt_all(migrated, kek)
    assert out == plain and used == {new}


WRITER = r"""
import json, random, sys, time, psycopg
from minnoctl import crypto
url, key, ids, count = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
kek = crypto.MasterKey(crypto.parse_master_key(key, "test"), "test")
conn = psycopg.connect(url, autocommit=True)
ring = crypto.Keyring.load(conn, kek)          # loaded before the rotation: a stale keyring
print("ready", flush=True)
sys.stdin.readline()                           # go
written = {}
retries = 0
for i in range(count):
    tid = random.choice(ids)
    value = f"written-by-app-{i}"
    while True:
        field = ring.encrypt("minno", "oauth_tokens", "access_token_encrypted", tid, value)
        try:
            conn.execute("UPDATE minno.oauth_tokens SET access_token_encrypted = %s WHERE id = %s", (field, tid))
            break
        except psycopg.Error as exc:
            assert exc.sqlstate == "MK001", exc    # the guard: that key is retired now
            ring = crypto.Keyring.load(conn, kek)  # what an application does: reload and write again
            retries += 1
    written[tid] = value
    time.sleep(0.002)
written["__retries__"] = retries
print(json.dumps(written), flush=True)
"""


def test_an_application_writing_with_the_previous_key_during_rotation_loses_nothing(migrated, kek):
    plain = fill(migrated, kek, 300)
    old = next(n for n, s in key_status(migrated).items() if s == "active")
    ids = sorted({tid for tid, _ in plain})
    writer = subprocess.Popen([sys.executable, "-c", WRITER, migrated, crypto.encode_key(kek.key), json.dumps(ids),
                               "400"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    rotation = spawn(migrated, kek, "token", "rotate", "--batch-size", "4", "--format", "json")
    wait_until(lambda: any(s == "decrypt_only" for s in key_status(migrated).values()))
    writer.stdin.write("go\n")
    writer.stdin.flush()
    written = json.loads(writer.stdout.readline())
    written.pop("__retries__")
    writer.wait()
    out_json, err = rotation.communicate(timeout=120)
    assert rotation.returncode == 0, err
    doc = json.loads(out_json)
    for tid, value in written.items():
        plain[(tid, "access_token_encrypted")] = value
    out, used = decrypt_all(migrated, kek)
    assert out == plain  # no write lost, none reverted by the rotation
    assert used == {doc["active"]} and old in doc["retired"]


def test_the_guard_rejects_a_field_under_a_retired_or_unknown_key(migrated, kek):
    plain = fill(migrated, kek, 1, providers=1)
    (tid, _), = [k for k in plain if k[1] == "access_token_encrypted"]
    with psycopg.connect(migrated, autocommit=True) as conn:
        stale = crypto.Keyring.load(conn, kek)
        old = stale.active.number
        tokens.rotate(load_settings(env={"MINNO_DATABASE_URL": migrated}), kek)
        assert key_status(migrated)[old] == "retired"
        for number, dek in ((old, stale.keys[old].key), (9999, crypto.generate_key())):
            field = crypto.encrypt_field(dek, number, "minno", "oauth_tokens", "access_token_encrypted", tid, "v")
            with pytest.raises(psycopg.Error) as info:
                conn.execute("UPDATE minno.oauth_tokens SET access_token_encrypted = %s WHERE id = %s", (field, tid))
            assert info.value.sqlstate == "MK001"
        with pytest.raises(psycopg.Error) as info:  # not a field at all: refused too (minno/0007)
            conn.execute("UPDATE minno.oauth_tokens SET access_token_encrypted = 'not-a-field' WHERE id = %s", (tid,))
        assert info.value.sqlstate == "MK002" and "not-a-field" not in str(info.value)


def test_secrets_and_assistant_tokens_rotate_too_and_secrets_point_at_the_new_key(migrated, kek):
    with psycopg.connect(migrated, autocommit=True) as conn:
        ring = tokens.ensure_active_key(conn, kek)
        pid = conn.execute("INSERT INTO supervisor.projects (name, path) VALUES ('odin', '/srv/odin') "
                           "RETURNING id").fetchone()[0]
        sid = uuid.uuid4()
        value = ring.encrypt("supervisor", "secrets", "encrypted_value", sid, "db-password-123")
        conn.execute("INSERT INTO supervisor.secrets (id, project_id, key_name, encrypted_value, encryption_key_id) "
                     "VALUES (%s, %s, 'DB_PASSWORD', %s, %s)", (sid, pid, value, ring.active.id))
        token = ring.encrypt("assistant", "user_tokens", "slack_access_token", "U1", "xoxp-user")
        conn.execute("INSERT INTO assistant.user_tokens (user_id, slack_access_token) VALUES ('U1', %s)", (token,))
    result = tokens.rotate(load_settings(env={"MINNO_DATABASE_URL": migrated}), kek)
    assert result.status == "done"
    assert result.reencrypted["supervisor.secrets.encrypted_value"] == 1
    assert result.reencrypted["assistant.user_tokens.slack_access_token"] == 1
    with psycopg.connect(migrated) as conn:
        ring = crypto.Keyring.load(conn, kek)
        ref, value = conn.execute("SELECT encryption_key_id::text, encrypted_value FROM supervisor.secrets").fetchone()
        assert ref == ring.active.id
        assert ring.decrypt("supervisor", "secrets", "encrypted_value", sid, value) == b"db-password-123"
        token = conn.execute("SELECT slack_access_token FROM assistant.user_tokens").fetchone()[0]
        assert crypto.field_key_number(token) == ring.active.number
        assert ring.decrypt("assistant", "user_tokens", "slack_access_token", "U1", token) == b"xoxp-user"


def test_list_filters_by_workspace_provider_and_expiry(cli, migrated, kek):
    env = env_for(migrated, kek)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('TA', 'a'), ('TB', 'b')")
    for ws, provider, expires in (("TA", "slack", "2000-01-01T00:00:00Z"), ("TA", "notion", "2999-01-01T00:00:00Z"),
                                  ("TB", "slack", None)):
        args = ["token", "put", "--workspace", ws, "--provider", provider, "--access-token-file", "-"]
        assert cli(*args, *(["--expires-at", expires] if expires else []), env=env, input="t").exit_code == 0

    def listed(*args: str) -> list[tuple[str, str]]:
        return [(r["workspace"], r["provider"]) for r in json.loads(cli("token", "list", "--format", "json", *args,
                                                                        env=env).stdout)]

    assert listed() == [("TA", "notion"), ("TA", "slack"), ("TB", "slack")]
    assert listed("--workspace", "TA") == [("TA", "notion"), ("TA", "slack")]
    assert listed("--provider", "slack") == [("TA", "slack"), ("TB", "slack")]
    assert listed("--expiring-within", "7") == [("TA", "slack")]  # already expired counts as expiring


def test_a_fenced_key_still_decrypts_but_takes_no_new_field(migrated, kek):
    plain = fill(migrated, kek, 1, providers=1)
    (tid, _), = [k for k in plain if k[1] == "access_token_encrypted"]
    with psycopg.connect(migrated, autocommit=True) as conn:
        ring = crypto.Keyring.load(conn, kek)
        conn.execute("UPDATE minno.encryption_keys SET write_fenced_at = now()")
        value = conn.execute("SELECT access_token_encrypted FROM minno.oauth_tokens").fetchone()[0]
        assert ring.decrypt("minno", "oauth_tokens", "access_token_encrypted", tid, value)
        with pytest.raises(psycopg.Error) as info:
            conn.execute("UPDATE minno.oauth_tokens SET access_token_encrypted = %s",
                         (ring.encrypt("minno", "oauth_tokens", "access_token_encrypted", tid, "new"),))
        assert info.value.sqlstate == "MK001" and "being retired" in str(info.value)
