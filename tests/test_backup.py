"""`minnoctl backup`: round trips on real servers, restores with stock tools, kill -9, damaged files,
a file-size limit, an older pg_dump against a newer server, and prune."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from minnoctl import crypto
from minnoctl.errors import ExitCode

KEY = crypto.encode_key(crypto.generate_key())


def one_error_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("minnoctl: error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def dbname_of(url: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(url)["dbname"]


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Every user table's row count and a checksum of its content."""
    out = {}
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg\\_%'""").fetchall()
        for schema, table in tables:
            out[f"{schema}.{table}"] = conn.execute(
                f'SELECT count(*), md5(coalesce(string_agg(t::text, \'|\' ORDER BY t::text), \'\')) '
                f'FROM "{schema}"."{table}" t').fetchone()
    return out


@pytest.fixture
def seeded(cli, migrated):
    env = {"MINNO_DATABASE_URL": migrated, "MINNO_MASTER_KEY": KEY}
    assert cli("seed", "--yes", env=env).exit_code == 0
    with psycopg.connect(migrated, autocommit=True) as conn:  # marker rows
        conn.execute("INSERT INTO chatbot.conversations (user_id, metadata) SELECT 'marker-' || g, "
                     "jsonb_build_object('marker', g) FROM generate_series(1, 500) g")
    return migrated


@pytest.fixture
def run(cli, seeded, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()

    def go(*args: str, **env: str):
        return cli("backup", *args, env={"MINNO_DATABASE_URL": seeded, "MINNO_BACKUP_DIR": str(folder),
                                         "MINNO_MASTER_KEY": KEY, **env})
    go.folder = folder
    return go


def create(run, *args: str) -> Path:
    result = run("create", *args, "--output-format", "json")
    assert result.exit_code == 0, result.stderr
    return Path(json.loads(result.stdout)["file"])


def admin_url(url: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def drop(url: str, name: str) -> None:
    with psycopg.connect(admin_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("args", [[], ["--format", "plain", "--compress", "gzip"],
                                  ["--format", "directory", "--jobs", "2", "--compress", "gzip:5"]],
                         ids=["custom", "plain-gzip", "directory-jobs"])
def test_a_marker_round_trip_restores_every_table_exactly(run, seeded, args):
    backup = create(run, *args, "--label", "round trip")
    manifest = json.loads(backup.with_name(backup.name + ".manifest.json").read_text())
    assert manifest["rows"]["chatbot.conversations"] == len(json.loads(
        (Path(__file__).parent.parent / "migrations" / "chatbot" / "seed" / "default.json").read_text()
    )["tables"]["conversations"]) + 500
    assert manifest["migrations"]["count"] > 10 and manifest["label"] == "round trip"
    target = f"r_{uuid.uuid4().hex[:10]}"
    try:
        result = run("restore", str(backup), "--into", target)
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip() == target
        restored, source = fingerprint(admin_url(seeded, target)), fingerprint(seeded)
        # minnoctl's drift baselines are recorded again from the restored schema (drift.rebaseline):
        # the same rows, fingerprints of the re-parsed definitions
        baseline = "minnoctl.schema_baseline"
        assert restored.pop(baseline)[0] == source.pop(baseline)[0]
        assert restored == source
    finally:
        drop(seeded, target)
    verified = run("verify", str(backup), "--restore-test")
    assert verified.exit_code == 0, verified.stderr
    listed = {r["file"]: r for r in json.loads(run("list", "--format", "json").stdout)}
    assert listed[backup.name]["restore_tested_at"] and listed[backup.name]["label"] == "round trip"


def test_files_are_private_and_only_whole_files_have_their_name(run):
    backup = create(run)
    for path in (backup, backup.with_name(backup.name + ".manifest.json")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(run.folder.glob(".partial-*"))


def test_stock_tools_restore_the_backups(run, seeded):
    from minnoctl.backup import find_tool

    plain = create(run, "--format", "plain", "--compress", "gzip")
    custom = create(run)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    with psycopg.connect(seeded) as conn:  # the stock client tools of the server's own version
        major = conn.info.server_version // 10000
    psql, pg_restore = find_tool("psql", major).path, find_tool("pg_restore", major).path
    for tool_input, name in ((plain, "plain"), (custom, "custom")):
        target = f"s_{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url(seeded, "postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{target}"')
        try:
            url = admin_url(seeded, target)
            if name == "plain":
                cmd = f"gunzip -c '{tool_input}' | '{psql}' -q -v ON_ERROR_STOP=1 -d \"{url}\" >/dev/null"
            else:
                cmd = f"'{pg_restore}' --exit-on-error -d \"{url}\" '{tool_input}'"
            proc = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr
            assert fingerprint(url) == fingerprint(seeded)
        finally:
            drop(seeded, target)


def test_a_flipped_byte_a_truncation_and_a_stranger_fail_verify(run, tmp_path):
    backup = create(run)
    assert run("verify", str(backup)).exit_code == 0
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0x01
    backup.write_bytes(bytes(data))
    result = run("verify", str(backup))
    assert result.exit_code == ExitCode.BACKUP_INVALID and "checksum" in one_error_line(result)
    result = run("restore", str(backup), "--into", "never_made")
    assert result.exit_code == ExitCode.BACKUP_INVALID and "do not restore it" in one_error_line(result)
    backup.write_bytes(bytes(data[: len(data) // 3]))
    result = run("verify", backup.name)  # a name in the backup directory works too
    assert result.exit_code == ExitCode.BACKUP_INVALID and "truncated" in one_error_line(result)
    stranger = run.folder / "notes.dump"
    stranger.write_text("hello")
    result = run("verify", str(stranger))
    assert result.exit_code == ExitCode.BACKUP_INVALID and "not a minnoctl backup" in one_error_line(result)
    result = run("verify", str(run.folder / "nope.dump"))
    assert result.exit_code == ExitCode.USAGE and "no such backup" in one_error_line(result)


def test_kill_9_during_a_backup_leaves_nothing_under_the_final_name(run, seeded, cli):
    env = {"MINNO_DATABASE_URL": seeded, "MINNO_MASTER_KEY": KEY}
    assert cli("seed", "--scale", "300000", "--random-seed", "5", "--modules", "chatbot,slackbot",
               env=env).exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "minnoctl", "backup", "create", "--compress", "gzip:9"],
                            env=dict(os.environ, **env, MINNO_BACKUP_DIR=str(run.folder)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 0 for p in run.folder.glob(".partial-*")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # pg_dump dies with it (PR_SET_PDEATHSIG)
    assert not [p for p in run.folder.iterdir() if not p.name.startswith(".partial-")]
    made = create(run, "--schema-only")  # the next run sweeps the dead run's leftovers
    assert [p.name for p in run.folder.iterdir()] and not list(run.folder.glob(".partial-*"))
    assert made.exists()


def test_a_file_size_limit_is_a_clear_error_and_keeps_nothing(run, seeded):
    env = dict(os.environ, MINNO_DATABASE_URL=seeded, MINNO_MASTER_KEY=KEY, MINNO_BACKUP_DIR=str(run.folder))
    proc = subprocess.run(["bash", "-c", f"ulimit -f 40; exec '{sys.executable}' -m minnoctl backup create "
                           "--compress none"], env=env, capture_output=True, text=True)
    assert proc.returncode == ExitCode.FAILURE, proc.stderr
    assert "file-size limit" in proc.stderr and "Traceback" not in proc.stderr
    assert list(run.folder.iterdir()) == []


def test_an_older_pg_dump_than_the_server_is_refused_before_writing(run, seeded):
    old = Path("/usr/lib/postgresql/15/bin")
    with psycopg.connect(seeded) as conn:
        major = conn.info.server_version // 10000
    if not (old / "pg_dump").exists():
        pytest.skip("Debian's PostgreSQL 15 client is not installed")
    if major <= 15:
        pytest.skip("the server is not newer than pg_dump 15")
    result = run("create", MINNOCTL_PG_BINDIR=str(old))
    assert result.exit_code == ExitCode.CONFIG
    assert f"no pg_dump of major version {major} or later" in one_error_line(result) and "15 at" in result.stderr
    assert list(run.folder.iterdir()) == []


def test_bad_places_and_servers_are_one_line(run, tmp_path):
    result = run("create", "--output-dir", str(tmp_path / "missing"))
    assert result.exit_code == ExitCode.USAGE and "does not exist" in one_error_line(result)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = run("create", "--output-dir", str(a_file))
    assert result.exit_code == ExitCode.USAGE and "is not a directory" in one_error_line(result)
    result = run("create", MINNO_DATABASE_URL="postgresql://nobody@127.0.0.1:1/minno")
    assert result.exit_code == ExitCode.UNREACHABLE and "connection refused" in one_error_line(result)
    assert list(run.folder.iterdir()) == []
    for args, phrase in ((["--jobs", "2"], "--jobs needs --format directory"),
                         (["--compress", "brotli"], "is not one of gzip"),
                         (["--compress", "gzip:99"], "level for gzip is 1-9"),
                         (["--schema-only", "--data-only"], "not both"),
                         (["--format", "tar"], "--format 'tar'")):
        # (lz4 / zstd work where pg_dump was built with them; the embedded one has gzip only)
        result = run("create", *args)
        assert result.exit_code == ExitCode.USAGE and phrase in one_error_line(result), args


def test_a_compression_pg_dump_lacks_is_a_clear_error(run):
    result = run("create", "--compress", "zstd")
    if result.exit_code == 0:
        pytest.skip("this pg_dump supports zstd")
    assert result.exit_code == ExitCode.USAGE and "use --compress gzip" in one_error_line(result)
    assert list(run.folder.iterdir()) == []


def test_restore_targets(run, seeded):
    backup = create(run)
    source = dbname_of(seeded)
    result = run("restore", str(backup), "--into", source)
    assert result.exit_code == ExitCode.USAGE and "already exists" in one_error_line(result)
    result = run("restore", str(backup), "--clean")
    assert result.exit_code == ExitCode.NOT_CONFIRMED
    with psycopg.connect(seeded, autocommit=True) as conn:
        conn.execute("DELETE FROM chatbot.messages")
        conn.execute("INSERT INTO chatbot.conversations (user_id) VALUES ('after the backup')")
    result = run("restore", str(backup), "--clean", "--yes")
    assert result.exit_code == 0, result.stderr
    with psycopg.connect(seeded) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.conversations WHERE user_id = 'after the backup'"
                            ).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0] > 0
    plain = create(run, "--format", "plain")
    result = run("restore", str(plain), "--clean", "--yes")
    assert result.exit_code == ExitCode.USAGE and "--clean needs a custom or directory backup" in one_error_line(result)


def test_prune_keeps_the_newest_and_the_newest_verified(run):
    made = [create(run, "--schema-only", "--label", f"n{i}") for i in range(4)]
    assert run("verify", str(made[0])).exit_code == 0  # the oldest is the only verified one
    result = run("prune", "--keep-last", "1", "--dry-run", "--format", "json")
    assert result.exit_code == 0
    plan = {r["file"]: r["action"] for r in json.loads(result.stdout)}
    assert plan == {made[0].name: "keep", made[1].name: "delete", made[2].name: "delete", made[3].name: "keep"}
    assert all(p.exists() for p in made)
    assert run("prune", "--keep-last", "1").exit_code == ExitCode.NOT_CONFIRMED
    assert run("prune", "--keep-last", "1", "--yes").exit_code == 0
    assert [p.exists() for p in made] == [True, False, False, True]
    assert not made[1].with_name(made[1].name + ".manifest.json").exists()
    assert run("prune", "--keep-last", "0").exit_code == ExitCode.USAGE


def test_prune_keep_days_keeps_a_backup_whose_time_it_cannot_read(run):
    """--keep-days keeps what is younger than N days; a manifest whose created_at cannot be read
    (edited by hand, another tool) has no age, so it is kept, never taken for old and deleted."""
    made = [create(run, "--schema-only", "--label", f"t{i}") for i in range(3)]
    manifest = made[1].with_name(made[1].name + ".manifest.json")
    doc = json.loads(manifest.read_text())
    doc["created_at"] = "sometime last week"
    manifest.write_text(json.dumps(doc))
    result = run("prune", "--keep-last", "1", "--keep-days", "30", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.stderr
    plan = {r["file"]: r["action"] for r in json.loads(result.stdout)}
    assert plan[made[1].name] == "keep" and plan[made[2].name] == "keep"
    assert run("prune", "--keep-last", "1", "--keep-days", "30", "--yes").exit_code == 0
    assert all(p.exists() for p in made)


def test_latest_names_the_newest_backup(run):
    none = run("verify", "latest")
    assert none.exit_code == ExitCode.USAGE and "latest: there is no backup in" in none.stderr
    made = [create(run, "--schema-only", "--label", f"n{i}") for i in range(2)]
    result = run("verify", "latest")
    assert result.exit_code == 0, result.stderr
    listed = {r["file"]: r["verified_at"] for r in json.loads(run("list", "--format", "json").stdout)}
    assert listed[made[1].name] and not listed[made[0].name]  # the newest was verified, the other not


def test_pg_stat_statements_is_left_out_of_a_dump(run, seeded):
    """The embedded build creates pg_stat_statements in its database; pg_dump 17+ leaves that
    monitoring extension out (--exclude-extension): its statistics are not data, and its CREATE
    EXTENSION (not a trusted extension) would stop a restore by a role that is not a superuser.
    The data's own extensions stay in the dump."""
    from minnoctl.backup import find_tool

    with psycopg.connect(seeded, autocommit=True) as conn:
        major = conn.info.server_version // 10000
        if major < 17:
            pytest.skip("pg_dump before 17 has no --exclude-extension")
        if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'").fetchone():
            pytest.skip("this build has no pg_stat_statements")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    dumped = create(run)
    listing = subprocess.run([str(find_tool("pg_restore", major).path), "--list", str(dumped)],
                             capture_output=True, text=True, check=True).stdout
    assert "pg_stat_statements" not in listing and "EXTENSION - vector" in listing
    assert run("verify", str(dumped), "--restore-test").exit_code == 0
