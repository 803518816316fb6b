"""`minnoctl seed`: development data, its safety checks, and `--scale` bulk data, on real servers
(the embedded PostgreSQL 18 and Debian's 15), with real processes for kill -9 and a terminal."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from minnoctl import crypto, modules, seed
from minnoctl.errors import ExitCode

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"  # each module's seed/ folder


def copy_seeds(target: Path) -> None:
    """The module folders' seed files laid out as a MINNOCTL_SEEDS_DIR: <module>.json, <scenario>/<module>.json."""
    for path in MIGRATIONS.glob("*/seed/*.json"):
        module, name = path.parent.parent.name, path.stem
        dest = target / f"{module}.json" if name == "default" else target / name / f"{module}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)


def env_for(url: str, kek: crypto.MasterKey | None = None, **extra: str) -> dict[str, str]:
    env = {"MINNO_DATABASE_URL": url, **extra}
    if kek is not None:
        env["MINNO_MASTER_KEY"] = crypto.encode_key(kek.key)
    return env


def one_error_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("minnoctl: error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def installed(url: str) -> list[modules.Module]:
    with psycopg.connect(url) as conn:
        return seed.installed_modules(conn)


def seed_rows(module: str) -> dict[str, list[dict]]:
    return json.loads((MIGRATIONS / module / "seed" / "default.json").read_text())["tables"]


def table_dump(url: str, exclude_types=("timestamp without time zone", "timestamp with time zone")) -> dict:
    """Every seeded table's rows, ordered, without time columns and encrypted columns (whose
    ciphertexts differ run to run by their nonces)."""
    encrypted = {(m.schema, e.table, e.column) for m in modules.MODULES for e in m.encrypted}
    out = {}
    with psycopg.connect(url) as conn:
        for m in seed.installed_modules(conn):
            for schema, table in seed.schema_tables(conn, [m.schema]):
                if table in m.seed_keeps:
                    continue
                cols = [c for c, t in conn.execute(
                    "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (f"{schema}.{table}",)).fetchall()
                    if t not in exclude_types and (schema, table, c) not in encrypted
                    and c != "encryption_key_id"]
                select_list = ", ".join(f'"{c}"::text' for c in cols)
                out[f"{schema}.{table}"] = conn.execute(
                    f'SELECT {select_list} FROM "{schema}"."{table}" ORDER BY 1, 2').fetchall()
    return out


def decrypted(url: str, kek: crypto.MasterKey) -> dict[tuple, str]:
    found = {}
    with psycopg.connect(url) as conn:
        ring = crypto.Keyring.load(conn, kek)
        for m in seed.installed_modules(conn):
            for e in m.encrypted:
                for pk, value in conn.execute(f'SELECT "{e.pk}", "{e.column}" FROM "{m.schema}"."{e.table}" '
                                              f'WHERE "{e.column}" IS NOT NULL'):
                    found[(m.schema, e.table, e.column, str(pk))] = ring.decrypt(m.schema, e.table, e.column, pk,
                                                                                 value).decode()
    return found


def file_plaintexts() -> dict[tuple, str]:
    """Every {"$encrypt": ...} value in the seed files, by (schema, table, column, pk)."""
    found = {}
    for m in modules.MODULES:
        for e in m.encrypted:
            for row in seed_rows(m.name).get(e.table, []):
                value = row.get(e.column)
                if isinstance(value, dict):
                    found[(m.schema, e.table, e.column, str(row[e.pk]))] = value["$encrypt"]
    return found


# ---------------------------------------------------------------------------------------------
# The seed files themselves


def test_every_module_has_a_seed_file_that_names_real_tables_and_columns():
    from minnoctl import migrate

    text = "\n".join(f.sql() for f in migrate.load_set())
    for m in modules.MODULES:
        tables = seed_rows(m.name)
        assert tables, m.name
        for table, rows in tables.items():
            assert table not in m.seed_keeps
            assert f"CREATE TABLE {table} (" in text, f"{m.name}.{table}"
            assert rows, f"{m.name}.{table} has no rows"


def test_relative_times_parse_and_bad_ones_are_refused():
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    assert seed.parse_time("now", now) == now
    assert seed.parse_time("now-95d", now) == now - dt.timedelta(days=95)
    assert seed.parse_time("now+2h", now) == now + dt.timedelta(hours=2)
    assert seed.parse_time("now-1d-6h", now) == now - dt.timedelta(days=1, hours=6)
    assert seed.parse_time("now+1.5w", now) == now + dt.timedelta(days=10.5)
    assert seed.parse_time("now-2d-1h45m", now) == now - dt.timedelta(days=2, hours=1, minutes=45)
    assert seed.parse_time("2026-01-02T03:04:05Z", now) == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    for bad in ("yesterday", "now-5y", "now 5d", ""):
        with pytest.raises(ValueError):
            seed.parse_time(bad, now)


def test_embeddings_are_deterministic_unit_vectors():
    a, b, c = seed.embedding("port allocation"), seed.embedding("port allocation"), seed.embedding("backups")
    assert len(a) == 1536 and a == b and a != c
    assert abs(sum(v * v for v in a) - 1.0) < 1e-9


# ---------------------------------------------------------------------------------------------
# Loading


def test_seed_loads_every_installed_module_with_encrypted_tokens(cli, migrated, kek):
    result = cli("seed", "--format", "json", env=env_for(migrated, kek))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    counts = {c["table"]: c["rows"] for c in doc["tables"]}
    names = [m.name for m in installed(migrated)]
    assert doc["modules"] == names
    for m in installed(migrated):
        for table, rows in seed_rows(m.name).items():
            assert counts[f"{m.schema}.{table}"] == len(rows), table
    # the keyring is never seeded, and every token is really encrypted with it
    assert "minno.encryption_keys" not in counts
    plain = {k: v for k, v in file_plaintexts().items() if k[0] in {m.schema for m in installed(migrated)}}
    assert decrypted(migrated, kek) == plain
    with psycopg.connect(migrated) as conn:
        everything = " ".join(str(r) for m in installed(migrated) for e in m.encrypted
                              for r in conn.execute(f'SELECT * FROM "{m.schema}"."{e.table}"'))
        for value in plain.values():
            assert value not in everything
        if "supervisor" in names:  # each secret names the key that encrypted it
            assert conn.execute("SELECT count(*) FROM supervisor.secrets s JOIN minno.encryption_keys k "
                                "ON k.id = s.encryption_key_id AND k.status = 'active'").fetchone()[0] == \
                len(seed_rows("supervisor")["secrets"])


def test_times_are_relative_to_the_moment_of_seeding(cli, migrated, kek):
    env = env_for(migrated, kek)
    assert cli("seed", "--modules", "assistant,slackbot", "--scenario", "overdue", env=env).exit_code == 0
    with psycopg.connect(migrated) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        expired, valid = conn.execute(
            "SELECT count(*) FILTER (WHERE expires_at < now()), count(*) FILTER (WHERE expires_at > now()) "
            "FROM assistant.sessions").fetchone()
        assert expired >= 1 and valid >= 1
        pending_expired = conn.execute("SELECT count(*) FROM assistant.confirmations WHERE status = 'pending' "
                                       "AND expires_at < now()").fetchone()[0]
        assert pending_expired >= 1
        old_audit = conn.execute("SELECT count(*) FROM slackbot.audit_logs "
                                 "WHERE created_at < now() - interval '90 days'").fetchone()[0]
        assert old_audit >= 1
        stale = conn.execute("SELECT count(*) FROM slackbot.user_sessions WHERE is_active "
                             "AND last_activity < now() - interval '24 hours'").fetchone()[0]
        assert stale >= 1
        expired_cache = conn.execute("SELECT count(*) FROM slackbot.query_cache WHERE expires_at < now()").fetchone()[0]
        assert expired_cache >= 1


def test_cleanup_has_work_and_boundary_rows_in_the_chatbot_seed(cli, migrated):
    # chatbot needs no key; the overdue scenario holds the rows past the limits
    assert cli("seed", "--modules", "chatbot", "--scenario", "overdue", env=env_for(migrated)).exit_code == 0
    with psycopg.connect(migrated) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        old = conn.execute("SELECT count(*) FROM chatbot.conversations WHERE updated_at < "
                           "(now() - interval '90 days')::timestamp").fetchone()[0]
        system = conn.execute("SELECT count(*) FROM chatbot.messages WHERE role = 'system' AND created_at < "
                              "(now() - interval '30 days')::timestamp").fetchone()[0]
        assert old >= 3 and system >= 1


def test_seeding_twice_gives_the_same_content(cli, migrated, kek):
    env = env_for(migrated, kek)
    assert cli("seed", env=env).exit_code == 0
    first, first_plain = table_dump(migrated), decrypted(migrated, kek)
    with psycopg.connect(migrated) as conn:
        t1 = conn.execute("SELECT id, updated_at FROM chatbot.conversations ORDER BY id").fetchall()
    time.sleep(1.1)
    result = cli("seed", "--yes", env=env)
    assert result.exit_code == 0, result.stderr
    assert table_dump(migrated) == first
    assert decrypted(migrated, kek) == first_plain
    with psycopg.connect(migrated) as conn:
        t2 = conn.execute("SELECT id, updated_at FROM chatbot.conversations ORDER BY id").fetchall()
    # the times moved with the clock, all by the same amount
    shifts = {round((b[1] - a[1]).total_seconds()) for a, b in zip(t1, t2)}
    assert len(shifts) == 1 and shifts.pop() >= 1


def test_seeding_one_module_leaves_the_others_and_the_keyring_alone(cli, migrated, kek):
    env = env_for(migrated, kek)
    assert cli("seed", env=env).exit_code == 0
    before = table_dump(migrated)
    plain = decrypted(migrated, kek)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DELETE FROM chatbot.messages")
        keys = conn.execute("SELECT key_number FROM minno.encryption_keys").fetchall()
    result = cli("seed", "--modules", "minno", "--yes", env=env)
    assert result.exit_code == 0, result.stderr
    after = table_dump(migrated)
    assert after["chatbot.messages"] == []  # not reseeded: only minno was asked for
    assert {k: v for k, v in after.items() if k != "chatbot.messages"} == \
        {k: v for k, v in before.items() if k != "chatbot.messages"}
    assert decrypted(migrated, kek) == plain  # assistant and supervisor fields still decrypt
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT key_number FROM minno.encryption_keys").fetchall() == keys


def test_a_module_referenced_by_another_is_seeded_with_it(cli, server, kek):
    """knowledge's tables reference supervisor.projects: seeding supervisor reseeds knowledge too."""
    import uuid

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.url(name)
    try:
        env = env_for(url, kek)
        assert cli("db", "init", env=env).exit_code == 0
        assert cli("seed", env=env).exit_code == 0
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM knowledge.learnings")
        result = cli("seed", "--modules", "supervisor", "--yes", env=env)
        assert result.exit_code == 0, result.stderr
        assert "seeding knowledge too" in result.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM knowledge.learnings").fetchone()[0] == \
                len(seed_rows("knowledge")["learnings"])
    finally:
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_verbose_shows_workspaces_and_sessions(cli, migrated, kek):
    result = cli("seed", "--modules", "minno", "--verbose", env=env_for(migrated, kek))
    assert result.exit_code == 0, result.stderr
    for ws in seed_rows("minno")["workspaces"]:
        assert ws["slack_team_id"] in result.stdout
    for session in seed_rows("minno")["minno_sessions"]:
        assert session["slack_thread_ts"] in result.stdout
    doc = json.loads(cli("seed", "--modules", "minno", "--verbose", "--yes", "--format", "json",
                         env=env_for(migrated, kek)).stdout)
    assert len(doc["workspaces"]) == len(seed_rows("minno")["workspaces"])
    assert len(doc["sessions"]) == len(seed_rows("minno")["minno_sessions"])
    assert {s["status"] for s in doc["sessions"]} == {"active", "completed", "failed", "archived"}


# ---------------------------------------------------------------------------------------------
# Safety: confirmation, production, one transaction


def test_existing_data_needs_yes_without_a_terminal_and_nothing_changes(cli, migrated, kek):
    env = env_for(migrated, kek)
    assert cli("seed", "--modules", "chatbot", env=env).exit_code == 0  # empty: no question
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO chatbot.conversations (user_id) VALUES ('mine')")
    result = cli("seed", "--modules", "chatbot", env=env)
    assert result.exit_code == ExitCode.NOT_CONFIRMED
    assert "--yes" in one_error_line(result)
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.conversations WHERE user_id = 'mine'").fetchone()[0] == 1


@pytest.mark.parametrize("var", ["MINNO_ENV", "APP_ENV", "NODE_ENV"])
def test_production_environment_is_refused_without_force(cli, migrated, kek, var):
    result = cli("seed", "--yes", env=env_for(migrated, kek, **{var: "Production"}))
    assert result.exit_code == ExitCode.PRODUCTION
    assert f"{var}=production" in one_error_line(result) and "--force" in result.stderr
    assert cli("seed", "--scale", "10", env=env_for(migrated, kek, **{var: "production"})).exit_code == \
        ExitCode.PRODUCTION
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM minno.workspaces").fetchone()[0] == 0
    assert cli("seed", "--yes", env=env_for(migrated, kek, **{var: "staging"})).exit_code == 0


def test_a_database_marked_production_is_refused_on_any_machine(cli, migrated, kek):
    env = env_for(migrated, kek)
    mods = ("--modules", ",".join(m.name for m in installed(migrated)))
    assert cli("db", "init", *mods, "--environment", "production", env=env).exit_code == 0
    result = cli("seed", "--yes", env=env)
    assert result.exit_code == ExitCode.PRODUCTION
    assert "marked production" in one_error_line(result)
    assert cli("seed", "--force", env=env).exit_code == ExitCode.NOT_CONFIRMED  # no terminal, no --yes
    result = cli("seed", "--force", "--yes", env=env)
    assert result.exit_code == 0, result.stderr
    # unmarking and db init --force are guarded too (tests/test_migrate_safety.py); the marker survives --force
    assert cli("db", "init", *mods, "--environment", "development", env=env).exit_code == ExitCode.PRODUCTION
    assert cli("db", "init", *mods, "--environment", "development", "--force-production",
               env=env).exit_code == ExitCode.NOT_CONFIRMED
    assert cli("db", "init", *mods, "--force", "--force-production", "--yes", env=env).exit_code == 0
    assert cli("seed", "--yes", env=env).exit_code == ExitCode.PRODUCTION
    assert cli("db", "init", *mods, "--environment", "development", "--force-production", "--yes",
               env=env).exit_code == 0
    assert cli("seed", "--yes", env=env).exit_code == 0
    assert cli("db", "init", "--environment", "Prod Uction", env=env).exit_code == ExitCode.USAGE


def _in_terminal(args: list[str], env: dict[str, str], answer: bytes, timeout: float = 60) -> tuple[int, str]:
    """Run minnoctl with a pseudo-terminal as its stdin/stdout/stderr, answer its question."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "minnoctl", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=dict(os.environ, **env), close_fds=True)
    os.close(slave)
    output = b""
    asked = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if not asked and b"[y/N]" in output:
                os.write(master, answer + b"\n")
                asked = True
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return proc.returncode, output.decode(errors="replace")


def test_in_a_terminal_force_still_asks_even_with_yes(migrated, kek):
    env = env_for(migrated, kek, MINNO_ENV="production")
    code, out = _in_terminal(["seed", "--force", "--yes", "--modules", "chatbot"], env, b"n")
    assert code == ExitCode.NOT_CONFIRMED, out
    assert "PRODUCTION" in out
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0] == 0
    code, out = _in_terminal(["seed", "--force", "--modules", "chatbot"], env, b"y")
    assert code == 0, out
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0] == \
            len(seed_rows("chatbot")["conversations"])


def test_a_failure_leaves_the_previous_data_untouched(cli, migrated, kek, tmp_path):
    env = env_for(migrated, kek)
    assert cli("seed", env=env).exit_code == 0
    before, plain = table_dump(migrated), decrypted(migrated, kek)
    broken = tmp_path / "seeds"
    copy_seeds(broken)
    doc = json.loads((broken / "slackbot.json").read_text())  # the last module loaded
    last = list(doc["tables"])[-1]
    doc["tables"][last].append(dict(doc["tables"][last][0]))  # a duplicate primary key
    (broken / "slackbot.json").write_text(json.dumps(doc))
    result = cli("seed", "--yes", env={**env, "MINNOCTL_SEEDS_DIR": str(broken)})
    if "slackbot" not in {m.name for m in installed(migrated)}:
        pytest.skip("slackbot not installed")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "slackbot.json" in line and last in line and "nothing was changed" in line
    assert table_dump(migrated) == before
    assert decrypted(migrated, kek) == plain


@pytest.mark.parametrize("change, phrase", [
    (lambda d: d["tables"]["workspaces"][0].update(no_such_column=1), "has no column 'no_such_column'"),
    (lambda d: d["tables"]["oauth_tokens"][0].update(access_token_encrypted="plaintext!"), "is encrypted"),
    (lambda d: d["tables"]["workspaces"][0].update(created_at="last tuesday"), "is not a time"),
    (lambda d: d["tables"].update(encryption_keys=[{"key_name": "x"}]), "not a table of schema minno"),
    (lambda d: d["tables"]["workspaces"][0].update(slack_team_name={"$nope": 1}), "unknown marker $nope"),
])
def test_bad_seed_files_are_one_line_and_change_nothing(cli, migrated, kek, tmp_path, change, phrase):
    broken = tmp_path / "seeds"
    copy_seeds(broken)
    doc = json.loads((broken / "minno.json").read_text())
    change(doc)
    (broken / "minno.json").write_text(json.dumps(doc))
    result = cli("seed", "--modules", "minno", env={**env_for(migrated, kek), "MINNOCTL_SEEDS_DIR": str(broken)})
    assert result.exit_code == 1
    assert phrase in one_error_line(result)
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM minno.workspaces").fetchone()[0] == 0


def test_not_json_is_one_line(cli, migrated, tmp_path):
    broken = tmp_path / "seeds"
    copy_seeds(broken)
    (broken / "chatbot.json").write_text('{"tables": {"conversations": [}')
    result = cli("seed", "--modules", "chatbot", env={**env_for(migrated), "MINNOCTL_SEEDS_DIR": str(broken)})
    assert result.exit_code == 1
    assert "not valid JSON at line 1" in one_error_line(result)


def test_bad_input_is_one_clear_line(cli, database, migrated):
    result = cli("seed", "--modules", "chatbot,nosuch", env=env_for(migrated))
    assert result.exit_code == ExitCode.USAGE and "unknown module 'nosuch'" in one_error_line(result)
    result = cli("seed", "--random-seed", "3", env=env_for(migrated))
    assert result.exit_code == ExitCode.USAGE and "--random-seed goes with --scale" in one_error_line(result)
    result = cli("seed", "--scale", "0", env=env_for(migrated))
    assert result.exit_code == ExitCode.USAGE
    # a database with nothing installed, then with only some modules
    result = cli("seed", env=env_for(database))
    assert result.exit_code == 1 and "minnoctl db init" in one_error_line(result)
    assert cli("db", "init", "--modules", "chatbot", env=env_for(database)).exit_code == 0
    result = cli("seed", "--modules", "slackbot", env=env_for(database))
    assert result.exit_code == 1
    assert "slackbot is not installed" in one_error_line(result) and "--modules slackbot" in result.stderr
    # the master key: chatbot needs none, minno does (no development key off the embedded server)
    assert cli("seed", "--modules", "chatbot", env=env_for(database)).exit_code == 0
    result = cli("seed", "--modules", "minno", "--yes", env=env_for(database))
    assert result.exit_code == ExitCode.CRYPTO
    assert "MINNO_MASTER_KEY" in one_error_line(result)


def test_pending_migrations_are_refused(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DELETE FROM minnoctl.migrations WHERE id = 'slackbot/0003_maintenance'")
        # and stock yoyo's row, which minnoctl would otherwise adopt as applied by yoyo
        conn.execute("DELETE FROM public._yoyo_migration WHERE migration_id = '0003_maintenance'")
    result = cli("seed", "--modules", "slackbot", env=env_for(migrated))
    if result.exit_code == 0:
        pytest.fail("seeded over a pending migration")
    assert "minnoctl migrate" in one_error_line(result)


def test_two_seeds_at_once_do_not_interleave(migrated, kek, run_minnoctl):
    env = env_for(migrated, kek)
    procs = [subprocess.Popen([sys.executable, "-m", "minnoctl", "seed", "--yes"], env=dict(os.environ, **env),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        p.wait(timeout=120)
    assert [p.returncode for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs]
    counts = {m.name: seed_rows(m.name) for m in installed(migrated)}
    with psycopg.connect(migrated) as conn:
        for m in installed(migrated):
            for table, rows in counts[m.name].items():
                assert conn.execute(f'SELECT count(*) FROM "{m.schema}"."{table}"').fetchone()[0] == len(rows)


# ---------------------------------------------------------------------------------------------
# --scale


def _scaled_ids(url: str) -> dict[str, tuple]:
    with psycopg.connect(url) as conn:
        out = {}
        for name in seed.SCALE_WEIGHTS:
            schema, table = name.split(".")
            if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                continue
            out[name] = conn.execute(
                f'SELECT count(*), md5(string_agg(id::text, \',\' ORDER BY id)) FROM {name}').fetchone()
        out["contents"] = conn.execute(
            "SELECT md5(string_agg(content, ',' ORDER BY id)) FROM chatbot.messages").fetchone()
        return out


def test_scale_adds_exactly_n_rows_deterministically(cli, migrated, any_server, kek):
    import uuid

    env = env_for(migrated, kek)
    result = cli("seed", "--scale", "5000", "--random-seed", "42", "--format", "json", env=env)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["rows"] == 5000 and doc["random_seed"] == 42
    with psycopg.connect(migrated) as conn:
        for t in doc["tables"]:
            assert conn.execute(f"SELECT count(*) FROM {t['table']}").fetchone()[0] == t["rows"]
        # the synthetic tokens are really encrypted and decrypt
        ring = crypto.Keyring.load(conn, kek)
        tid, value = conn.execute("SELECT id, access_token_encrypted FROM minno.oauth_tokens LIMIT 1").fetchone()
        assert b"-scale-" in ring.decrypt("minno", "oauth_tokens", "access_token_encrypted", tid, value)
    first = _scaled_ids(migrated)
    # the same seed on another database gives the same rows; another seed adds different ones
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    other = any_server.url(name)
    try:
        assert cli("db", "init", "--modules", ",".join(m.name for m in installed(migrated)),
                   env=env_for(other, kek)).exit_code == 0
        assert cli("seed", "--scale", "5000", "--random-seed", "42", env=env_for(other, kek)).exit_code == 0
        assert _scaled_ids(other) == first
    finally:
        with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    result = cli("seed", "--scale", "5000", "--random-seed", "42", env=env)
    assert result.exit_code == 1 and "--random-seed 42 are already" in one_error_line(result)
    assert _scaled_ids(migrated) == first  # nothing added
    assert cli("seed", "--scale", "5000", "--random-seed", "43", env=env).exit_code == 0
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0] == 2 * first["chatbot.messages"][0]


def test_scale_without_a_seed_picks_one_and_says_it(cli, migrated, kek):
    result = cli("seed", "--scale", "100", "--modules", "chatbot", env=env_for(migrated))
    assert result.exit_code == 0, result.stderr
    assert "pass --random-seed" in result.stderr
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0] == 100
        assert conn.execute("SELECT count(*) FROM minno.oauth_tokens").fetchone()[0] == 0


def test_kill_9_during_scale_adds_nothing(migrated, kek):
    env = dict(os.environ, **env_for(migrated, kek))
    proc = subprocess.Popen([sys.executable, "-m", "minnoctl", "seed", "--scale", "2000000", "--random-seed", "7",
                             "--modules", "chatbot"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    with psycopg.connect(migrated, autocommit=True) as conn:
        while time.monotonic() < deadline:  # wait until COPY is streaming rows
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %%chatbot%%messages%%' "
                               "AND state = 'active'").fetchone()
            if row[0]:
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("the scale run never started copying")
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY %%chatbot%%' "
                           "AND pid <> pg_backend_pid()").fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0] == 0
