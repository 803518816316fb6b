"""Issue 15, items 4 and 10 (tokens and keys): no field is ever stored under a key that is being
retired, whatever the writer's isolation level; `token rotate`, `token rotate --master` and `token
retire` take one lock; a master re-wrap is atomic, even killed; a master key file others can read is
warned about. The application side is a psycopg session in the test; minnoctl runs as a real process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import uuid

import psycopg
import pytest

from minnoctl import crypto, tokens
from minnoctl.errors import ExitCode

from test_tokens import decrypt_all, env_for, fill, key_status, spawn, wait_until  # tests/ is on sys.path (conftest)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def workspace_id(url: str) -> uuid.UUID:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id FROM minno.workspaces ORDER BY slack_team_id LIMIT 1").fetchone()[0]


def fields_under_dead_keys(url: str) -> int:
    """Fields whose header names a retired or unknown key (they could never be decrypted)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT count(*) FROM minno.oauth_tokens t, LATERAL (VALUES (t.access_token_encrypted), "
            f"(t.refresh_token_encrypted)) AS f(v) LEFT JOIN minno.encryption_keys k ON "
            f"k.key_number = {tokens.header_sql('f.v')} WHERE f.v IS NOT NULL AND "
            f"(k.status IS NULL OR k.status = 'retired')").fetchone()[0]


def run_in_background(url: str, kek: crypto.MasterKey, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "minnoctl", *args], env=dict(os.environ, **env_for(url, kek, **env)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def waiting_on_a_lock(url: str, app_prefix: str = "minnoctl") -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                            "application_name LIKE %s AND wait_event_type = 'Lock'",
                            (app_prefix + "%",)).fetchone()[0] > 0


def unwrapping_masters(url: str, *masters: crypto.MasterKey) -> dict[int, list[str]]:
    """For each live data key, the masters (by source) that unwrap it."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT key_number, encrypted_key FROM minno.encryption_keys "
                            "WHERE encrypted_key IS NOT NULL").fetchall()
    out = {}
    for number, wrapped in rows:
        ok = []
        for m in masters:
            try:
                crypto.unwrap_dek(m, wrapped, number)
                ok.append(m.source)
            except crypto.MasterKeyError:
                pass
        out[number] = ok
    return out


# ---------------------------------------------------------------------------------------------
# item 4: a writer whose snapshot predates the rotation


@pytest.mark.parametrize("isolation", [psycopg.IsolationLevel.REPEATABLE_READ, psycopg.IsolationLevel.SERIALIZABLE])
def test_a_snapshot_taken_before_a_rotation_cannot_store_a_field_under_the_retired_key(migrated, kek, run_minnoctl,
                                                                                      isolation):
    fill(migrated, kek, 1, providers=1)
    ws = workspace_id(migrated)
    with psycopg.connect(migrated, autocommit=True) as setup:
        stale = crypto.Keyring.load(setup, kek)  # the application's keyring, loaded before the rotation
    old = stale.active.number
    app = psycopg.connect(migrated)
    app.isolation_level = isolation
    try:
        app.execute("SELECT count(*) FROM minno.oauth_tokens").fetchone()  # the snapshot is taken here
        rotated = run_minnoctl("token", "rotate", "--format", "json", env=env_for(migrated, kek), timeout=60)
        assert rotated.returncode == 0, rotated.stderr
        assert old in json.loads(rotated.stdout)["retired"]
        tid = uuid.uuid4()  # a new row, as `token put` for a new provider writes: no row conflict to trip on
        value = stale.encrypt("minno", "oauth_tokens", "access_token_encrypted", tid, "written-late")
        with pytest.raises(psycopg.Error) as info:
            app.execute("INSERT INTO minno.oauth_tokens (id, workspace_id, provider, access_token_encrypted) "
                        "VALUES (%s, %s, 'notion', %s)", (tid, ws, value))
            app.commit()
        assert info.value.sqlstate in ("40001", "MK001"), info.value
    finally:
        app.close()
    assert fields_under_dead_keys(migrated) == 0
    assert run_minnoctl("token", "verify", env=env_for(migrated, kek)).returncode == 0


def test_read_committed_writers_still_work_and_an_application_role_needs_no_update_on_the_keyring(migrated, kek):
    """The guard's row lock on the key row is taken as the function's owner: an application role
    with only SELECT on the keyring writes tokens as before."""
    fill(migrated, kek, 1, providers=1)
    ws = workspace_id(migrated)
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT USAGE ON SCHEMA minno TO "{role}"')
        conn.execute(f'GRANT SELECT ON minno.encryption_keys, minno.workspaces TO "{role}"')
        conn.execute(f'GRANT SELECT, INSERT, UPDATE ON minno.oauth_tokens TO "{role}"')
        ring = crypto.Keyring.load(conn, kek)
    try:
        params = psycopg.conninfo.conninfo_to_dict(migrated) | {"user": role}
        params.pop("password", None)
        try:
            app = psycopg.connect(**params, autocommit=True)
        except psycopg.OperationalError as exc:  # a server with password logins only
            pytest.skip(f"cannot log in as a fresh role here: {exc}")
        with app:
            tid = uuid.uuid4()
            app.execute("INSERT INTO minno.oauth_tokens (id, workspace_id, provider, access_token_encrypted) "
                        "VALUES (%s, %s, 'notion', %s)",
                        (tid, ws, ring.encrypt("minno", "oauth_tokens", "access_token_encrypted", tid, "v")))
    finally:
        with psycopg.connect(migrated, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_updating_other_columns_of_a_token_takes_no_key_lock_and_is_not_refused(migrated, kek):
    fill(migrated, kek, 1, providers=1)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("UPDATE minno.encryption_keys SET write_fenced_at = now()")  # its key is being retired
        conn.execute("UPDATE minno.oauth_tokens SET expires_at = now() + interval '1 day'")  # the fields unchanged
        with conn.transaction():
            conn.execute("UPDATE minno.oauth_tokens SET scopes = '{a}'")
            locked = conn.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND "
                                  "relation = 'minno.encryption_keys'::regclass").fetchone()[0]
        assert locked == 0


# ---------------------------------------------------------------------------------------------
# items 4 and 10: one lock for rotate, rotate --master and retire; the re-wrap is atomic


def _extra_keys(url: str, kek: crypto.MasterKey, n: int) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [crypto.create_data_key(conn, kek, name=f"old-{uuid.uuid4().hex[:8]}", status="decrypt_only").number
                for _ in range(n)]


def test_rotate_and_retire_meet_a_master_rewrap_with_the_lock_held_exit(migrated, kek, run_minnoctl):
    plain = fill(migrated, kek, 2)
    spare, = _extra_keys(migrated, kek, 1)  # a decrypt-only key no field uses: `token retire` would retire it
    active = next(n for n, s in key_status(migrated).items() if s == "active")
    new = crypto.MasterKey(crypto.generate_key(), "new")
    holder = psycopg.connect(migrated)  # an application transaction holding the active key's row
    holder.execute("SELECT 1 FROM minno.encryption_keys WHERE key_number = %s FOR UPDATE", (active,))
    rewrap = run_in_background(migrated, kek, "token", "rotate", "--master",
                               MINNO_NEW_MASTER_KEY=crypto.encode_key(new.key))
    try:
        wait_until(lambda: waiting_on_a_lock(migrated), timeout=20)  # mid-way through its transaction
        # all at once: the re-wrap waits at most 5 s for the row before it gives up
        contenders = [run_in_background(migrated, kek, *args, MINNO_NEW_MASTER_KEY=crypto.encode_key(
            crypto.generate_key())) for args in (["token", "retire", str(spare)], ["token", "rotate"],
                                                 ["token", "rotate", "--master"])]
        for other in contenders:
            _out, err = other.communicate(timeout=20)
            assert other.returncode == ExitCode.LOCK_HELD, (other.args, err)
            assert "token-rotate lock is held by minnoctl token-rotate pid=" in one_error_line(err)
        assert key_status(migrated)[spare] == "decrypt_only"
    finally:
        holder.rollback()
        holder.close()
    out, err = rewrap.communicate(timeout=30)
    if rewrap.returncode == ExitCode.LOCK_HELD:  # a slow machine: it waited its 5 s for the row and gave up
        assert "application transactions held the data key rows" in one_error_line(err)
        assert all(v == ["test"] for v in unwrapping_masters(migrated, kek, new).values())  # nothing changed
        rewrap = run_in_background(migrated, kek, "token", "rotate", "--master",
                                   MINNO_NEW_MASTER_KEY=crypto.encode_key(new.key))
        out, err = rewrap.communicate(timeout=30)
    assert rewrap.returncode == 0, err
    assert all(v == ["new"] for v in unwrapping_masters(migrated, kek, new).values())
    assert decrypt_all(migrated, new)[0] == plain
    retired = run_minnoctl("token", "retire", str(spare), env=env_for(migrated, new))
    assert retired.returncode == 0, retired.stderr


def test_a_master_rewrap_refuses_while_a_data_rotation_runs(migrated, kek, run_minnoctl):
    plain = fill(migrated, kek, 100)
    rotation = spawn(migrated, kek, "token", "rotate", "--batch-size", "2")
    new = crypto.MasterKey(crypto.generate_key(), "new")
    try:
        wait_until(lambda: any(s == "decrypt_only" for s in key_status(migrated).values()))
        rewrap = run_minnoctl("token", "rotate", "--master",
                              env=env_for(migrated, kek, MINNO_NEW_MASTER_KEY=crypto.encode_key(new.key)))
        assert rewrap.returncode == ExitCode.LOCK_HELD, rewrap.stderr
        assert "token-rotate lock is held" in one_error_line(rewrap.stderr)
    finally:
        rotation.kill()
        rotation.wait()
    assert all(v == ["test"] for v in unwrapping_masters(migrated, kek, new).values())
    assert decrypt_all(migrated, kek)[0] == plain


def test_a_writer_holding_the_key_row_stops_the_rotation_with_one_line_and_a_rerun_completes(migrated, kek,
                                                                                           run_minnoctl):
    plain = fill(migrated, kek, 2)
    holder = psycopg.connect(migrated)  # an application transaction that wrote under the active key, not committed
    holder.execute("SELECT 1 FROM minno.encryption_keys WHERE status = 'active' FOR SHARE")
    try:
        stopped = run_minnoctl("token", "rotate", env=env_for(migrated, kek), timeout=60)
    finally:
        holder.rollback()
        holder.close()
    assert stopped.returncode == ExitCode.LOCK_HELD
    assert "the rotation did not start: application transactions held" in one_error_line(stopped.stderr)
    assert sorted(key_status(migrated).values()) == ["active", "pending"]
    rerun = run_minnoctl("token", "rotate", "--format", "json", env=env_for(migrated, kek))
    assert rerun.returncode == 0, rerun.stderr
    assert len(key_status(migrated)) == 2  # the pending key of the stopped run was used, not one more made
    out, used = decrypt_all(migrated, kek)
    assert out == plain and used == {json.loads(rerun.stdout)["active"]}


def test_kill_9_during_a_master_rewrap_leaves_every_key_under_exactly_one_master(migrated, kek, run_minnoctl):
    plain = fill(migrated, kek, 2)
    numbers = _extra_keys(migrated, kek, 40)
    new = crypto.MasterKey(crypto.generate_key(), "new")
    holder = psycopg.connect(migrated)  # holds the last key's row: the re-wrap stops there, the others done
    holder.execute("SELECT 1 FROM minno.encryption_keys WHERE key_number = %s FOR SHARE", (max(numbers),))
    victim = run_in_background(migrated, kek, "token", "rotate", "--master",
                               MINNO_NEW_MASTER_KEY=crypto.encode_key(new.key))
    try:
        wait_until(lambda: waiting_on_a_lock(migrated), timeout=20)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        holder.rollback()
        holder.close()
    # the server notices the dead client once its backend runs again; wait for it to go
    wait_until(lambda: not waiting_on_a_lock(migrated) and _no_rewrap_session(migrated), timeout=20)
    masters = unwrapping_masters(migrated, kek, new)
    assert len(masters) == 41 and all(v == ["test"] for v in masters.values()), masters
    assert decrypt_all(migrated, kek)[0] == plain
    again = run_minnoctl("token", "rotate", "--master",
                         env=env_for(migrated, kek, MINNO_NEW_MASTER_KEY=crypto.encode_key(new.key)))
    assert again.returncode == 0, again.stderr
    masters = unwrapping_masters(migrated, kek, new)
    assert len(masters) == 41 and all(v == ["new"] for v in masters.values()), masters
    assert decrypt_all(migrated, new)[0] == plain
    # not knowing whether a killed re-wrap committed, the operator runs it again: a no-op, exit 0
    third = run_minnoctl("token", "rotate", "--master",
                         env=env_for(migrated, kek, MINNO_NEW_MASTER_KEY=crypto.encode_key(new.key)))
    assert third.returncode == 0 and "already wrapped by master key" in third.stderr, third.stderr
    assert all(v == ["new"] for v in unwrapping_masters(migrated, kek, new).values())


def _no_rewrap_session(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                            "application_name LIKE 'minnoctl token-rotate%'").fetchone()[0] == 0


def test_many_rotations_and_master_rewraps_at_once_are_one_line_each_and_leave_one_master(migrated, kek):
    plain = fill(migrated, kek, 20)
    new = crypto.MasterKey(crypto.generate_key(), "new")
    runs = [run_in_background(migrated, kek, "token", "rotate", *extra, MINNO_NEW_MASTER_KEY=crypto.encode_key(new.key))
            for extra in (["--batch-size", "5"], ["--master"]) * 3]
    results = [(p.args[4:], *p.communicate(timeout=90), p.returncode) for p in runs]
    for args, _out, err, code in results:
        assert code in (ExitCode.OK, ExitCode.LOCK_HELD, ExitCode.CRYPTO), (args, code, err)
        assert "Traceback" not in err
        if code != ExitCode.OK:
            one_error_line(err)
    masters = unwrapping_masters(migrated, kek, new)
    assert all(len(v) == 1 for v in masters.values()) and len({v[0] for v in masters.values()}) == 1, masters
    winner = kek if next(iter(masters.values())) == ["test"] else new
    assert decrypt_all(migrated, winner)[0] == plain
    assert fields_under_dead_keys(migrated) == 0


def test_first_token_puts_at_once_make_one_data_key(migrated, kek):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T1', 'one')")
    env = dict(os.environ, **env_for(migrated, kek))
    puts = [subprocess.Popen([sys.executable, "-m", "minnoctl", "token", "put", "--workspace", "T1", "--provider",
                              f"prov{i}", "--allow-unknown-provider", "--access-token-file", "-"], env=env,
                             stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    for p in puts:
        _out, err = p.communicate("token\n", timeout=60)
        assert p.returncode == 0, err
    assert list(key_status(migrated).values()) == ["active"]
    assert len(decrypt_all(migrated, kek)[0]) == 4


# ---------------------------------------------------------------------------------------------
# the master key file's permissions


def test_a_master_key_file_others_can_read_is_warned_about(run_minnoctl, migrated, kek, tmp_path):
    """A real process: one warning line on stderr naming the file and `chmod 600`; the command runs."""
    path = tmp_path / "master.key"
    path.write_text(crypto.encode_key(kek.key) + "\n")
    path.chmod(0o644)
    result = run_minnoctl("token", "verify", env={"MINNO_DATABASE_URL": migrated, "MINNO_MASTER_KEY_FILE": str(path)})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1, result.stderr
    assert str(path) in warnings[0] and "chmod 600" in warnings[0] and "0644" in warnings[0]
    assert crypto.encode_key(kek.key) not in result.stderr + result.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # warned, never changed behind the operator's back


def _warnings_loading(env: dict[str, str], **kwargs) -> list[str]:
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("minnoctl")
    logger.addHandler(handler)
    try:
        crypto.load_master_key(env, **kwargs)
    finally:
        logger.removeHandler(handler)
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("mode, warned", [(0o600, False), (0o400, False), (0o640, True), (0o604, True),
                                          (0o620, True)])
@pytest.mark.parametrize("variable", ["MINNO_MASTER_KEY_FILE", "MINNO_NEW_MASTER_KEY_FILE"])
def test_which_modes_are_warned_about(tmp_path, mode, warned, variable):
    path = tmp_path / "key"
    path.write_text(crypto.encode_key(crypto.generate_key()))
    path.chmod(mode)
    warnings = _warnings_loading({variable: str(path)}, new=variable.startswith("MINNO_NEW"))
    assert len(warnings) == int(warned), warnings
    if warned:
        assert variable in warnings[0] and f"chmod 600 '{path}'" in warnings[0] and f"{mode:04o}" in warnings[0]


def test_the_development_key_file_is_checked_too(tmp_path):
    _warnings_loading({}, embedded=True, minno_home=tmp_path)  # created 0600: no warning
    (tmp_path / crypto.DEV_KEY_FILE).chmod(0o644)
    warnings = _warnings_loading({}, embedded=True, minno_home=tmp_path)
    assert len(warnings) == 1 and "development master key" in warnings[0]
