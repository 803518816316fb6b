"""`minnoctl backup` cannot lose data (issue 15, items 1, 2, 3, 7 and 8), proven with real processes on
real servers: a production target needs --force-production; restore writes only into the database the
connection really uses or a new database named by a plain name; a killed restore leaves the old
database whole and no database behind; a backup belongs to one database of one server; a backup is
whole or absent (a full disk at the manifest, SIGINT, a short idle_in_transaction_session_timeout)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from minnoctl.errors import ExitCode
from test_backup import fingerprint, one_error_line

TMP_PREFIX = "minnoctl_tmp_"  # minnoctl's temporary databases: minnoctl_tmp_<pid>_<host tag>_<random>
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def with_db(url: str, dbname: str, **extra: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    params.update(extra)
    return make_conninfo("", **params)


def admin(url: str) -> psycopg.Connection:
    return psycopg.connect(with_db(url, "postgres"), autocommit=True)


def databases(url: str) -> set[str]:
    with admin(url) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def slow(url: str) -> str:
    """The same target, with the session setting that makes public.slow's CHECK sleep 20 ms a row: a
    restore through it takes about 3 s, long enough to be killed in the middle of its COPY."""
    return with_db(url, conninfo_to_dict(url)["dbname"], options="-c minnotest.slow=on")


SCHEMA = """
CREATE TABLE public.t (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO public.t SELECT g, 'row ' || g FROM generate_series(1, 3) g;
CREATE FUNCTION public.slow_ok(i int) RETURNS boolean LANGUAGE sql AS $$
  SELECT CASE WHEN current_setting('minnotest.slow', true) = 'on' THEN (SELECT true FROM pg_sleep(0.02))
              ELSE true END $$;
CREATE TABLE public.slow (i int CHECK (public.slow_ok(i)));
INSERT INTO public.slow SELECT generate_series(1, 150);
"""


@pytest.fixture
def small(database):
    """A small database: three rows in public.t and a table that restores slowly on demand."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return database


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "backups"
    path.mkdir()
    return path


def env(url: str, folder: Path, **extra: str) -> dict[str, str]:
    return {"MINNO_DATABASE_URL": url, "MINNO_BACKUP_DIR": str(folder), **extra}


def make_backup(cli, url: str, folder: Path, *args: str) -> Path:
    result = cli("backup", "create", *args, "--output-format", "json", env=env(url, folder))
    assert result.exit_code == 0, result.stderr
    return Path(json.loads(result.stdout)["file"])


def start(args: list[str], environment: dict[str, str]) -> subprocess.Popen:
    with admin(environment["MINNO_DATABASE_URL"]) as conn:  # only sessions started after this count
        started = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    proc = subprocess.Popen([sys.executable, "-m", "minnoctl", *args], env=dict(os.environ, **environment),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.started_at = started
    return proc


def wait_for_sleeping_restore(url: str, proc: subprocess.Popen, timeout: float = 30) -> list[psutil.Process]:
    """Until the restore's COPY sleeps in public.slow's CHECK; the minnoctl's child processes then."""
    deadline = time.monotonic() + timeout
    with admin(url) as conn:
        while not conn.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND backend_start > %s",
                               (proc.started_at,)).fetchone():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the restore never reached its COPY"
            time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children
    return children


def gone(processes: list[psutil.Process], timeout: float = 5) -> list[str]:
    """The processes still alive after `timeout` (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in processes:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {p.name()}")
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def wait_no_sleepers(url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    with admin(url) as conn:
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'").fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.05)


def drop_databases(url: str, names) -> None:
    with admin(url) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------
# 1. production


def test_restore_clean_on_production_is_refused_without_force_production(cli, small, folder):
    backup = make_backup(cli, small, folder)
    with psycopg.connect(small, autocommit=True) as conn:
        conn.execute("INSERT INTO public.t VALUES (99, 'after the backup')")
    before = fingerprint(small)
    for variable in ("MINNO_ENV", "APP_ENV", "NODE_ENV"):
        result = cli("backup", "restore", str(backup), "--clean", "--yes", env=env(small, folder, **{variable: "prod"}))
        assert result.exit_code == ExitCode.PRODUCTION, (variable, result.stderr)
        assert "--force-production" in one_error_line(result)
    with psycopg.connect(small, autocommit=True) as conn:  # marked production by `db init --environment`
        conn.execute("CREATE SCHEMA minnoctl; CREATE TABLE minnoctl.settings (name text PRIMARY KEY, value text "
                     "NOT NULL, set_at timestamptz NOT NULL DEFAULT now(), set_by text NOT NULL);"
                     "INSERT INTO minnoctl.settings (name, value, set_by) VALUES ('environment', 'production', 't')")
    before = fingerprint(small)
    result = cli("backup", "restore", str(backup), "--clean", "--yes", env=env(small, folder))
    assert result.exit_code == ExitCode.PRODUCTION and "marked production" in one_error_line(result)
    result = cli("backup", "restore", str(backup), "--clean", "--force-production", env=env(small, folder))
    assert result.exit_code == ExitCode.NOT_CONFIRMED  # a script still needs --yes
    assert fingerprint(small) == before
    result = cli("backup", "restore", str(backup), "--clean", "--force-production", "--yes", env=env(small, folder))
    assert result.exit_code == 0, result.stderr
    with psycopg.connect(small) as conn:
        assert conn.execute("SELECT count(*) FROM public.t").fetchone()[0] == 3


def test_restore_clean_keeps_the_production_mark_a_backup_taken_before_it_lacks(cli, migrated, folder):
    """The mark lives in the database (minnoctl.settings): a backup taken before `db init
    --environment production` holds no mark, and restoring it over the marked database must not
    lift every guard with it."""
    backup = make_backup(cli, migrated, folder)
    mods = ("--modules", "minno")
    assert cli("db", "init", *mods, "--environment", "prod", env=env(migrated, folder)).exit_code == 0
    result = cli("backup", "restore", str(backup), "--clean", "--force-production", "--yes", env=env(migrated, folder))
    assert result.exit_code == 0, result.stderr
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT value FROM minnoctl.settings WHERE name = 'environment'").fetchone() == \
            ("production",)
    result = cli("backup", "restore", str(backup), "--clean", "--yes", env=env(migrated, folder))
    assert result.exit_code == ExitCode.PRODUCTION, result.stderr


# ---------------------------------------------------------------------------------------------
# 2. restore targets


def test_restore_clean_replaces_the_database_the_connection_really_uses(cli, small, folder, any_server):
    """A URL without a database name connects to the database named like its user (libpq's
    default): --clean replaces that one, never a guessed `minno`."""
    backup = make_backup(cli, small, folder)
    role = f"r_{uuid.uuid4().hex[:10]}"
    made_minno = "minno" not in databases(small)
    with admin(small) as conn:
        conn.execute(f'CREATE ROLE "{role}" SUPERUSER LOGIN')
        conn.execute(f'CREATE DATABASE "{role}"')
        if made_minno:
            conn.execute("CREATE DATABASE minno")
    minno = with_db(small, "minno")
    with psycopg.connect(minno, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.guard_minno (x int)")
    try:
        minno_before = fingerprint(minno)
        params = {k: v for k, v in conninfo_to_dict(small).items() if k != "dbname"} | {"user": role}
        url = make_conninfo("", **params)
        result = cli("backup", "restore", str(backup), "--clean", "--yes", env=env(url, folder))
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip() == role
        assert fingerprint(minno) == minno_before  # untouched
        with psycopg.connect(with_db(small, role)) as conn:
            assert conn.execute("SELECT count(*) FROM public.t").fetchone()[0] == 3
    finally:
        with psycopg.connect(minno, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS public.guard_minno; DROP TABLE IF EXISTS public.t; "
                         "DROP TABLE IF EXISTS public.slow; DROP FUNCTION IF EXISTS public.slow_ok(int)")
        drop_databases(small, [role] + (["minno"] if made_minno else []))
        with admin(small) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


BAD_INTO = ["dbname=postgres", "host=127.0.0.1 dbname=postgres", "postgresql://x@y/postgres", "", "d" * 64,
            "two words", "new\nline", "quote'd", f"{TMP_PREFIX}1_abcdef_01234567"]


def test_into_is_a_database_name_never_a_connection_string(cli, small, folder):
    backup = make_backup(cli, small, folder)
    before = databases(small)
    with psycopg.connect(with_db(small, "postgres")) as conn:
        postgres_tables = conn.execute("SELECT count(*) FROM pg_class WHERE relname IN ('t', 'slow')").fetchone()[0]
    for into in BAD_INTO:
        result = cli("backup", "restore", str(backup), "--into", into, env=env(small, folder))
        assert result.exit_code == ExitCode.USAGE, (into, result.stderr)
        assert "--into" in one_error_line(result)
        assert databases(small) == before, into
    with psycopg.connect(with_db(small, "postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname IN ('t', 'slow')").fetchone()[0] == \
            postgres_tables


def test_into_an_existing_database_never_overwrites_it(cli, small, folder):
    backup = make_backup(cli, small, folder)
    other = f"o_{uuid.uuid4().hex[:10]}"
    with admin(small) as conn:
        conn.execute(f'CREATE DATABASE "{other}"')
    try:
        with psycopg.connect(with_db(small, other), autocommit=True) as conn:
            conn.execute("CREATE TABLE keep (x int); INSERT INTO keep VALUES (1)")
        before = fingerprint(with_db(small, other))
        result = cli("backup", "restore", str(backup), "--into", other, env=env(small, folder))
        assert result.exit_code == ExitCode.USAGE and "already exists" in one_error_line(result)
        assert fingerprint(with_db(small, other)) == before
    finally:
        drop_databases(small, [other])


# ---------------------------------------------------------------------------------------------
# 3. a killed minnoctl stops what it started


def test_a_killed_restore_clean_stops_pg_restore_and_leaves_the_old_database_whole(cli, small, folder):
    backup = make_backup(cli, small, folder)
    with psycopg.connect(small, autocommit=True) as conn:
        conn.execute("INSERT INTO public.t VALUES (99, 'after the backup')")
    before = fingerprint(small)
    proc = start(["backup", "restore", str(backup), "--clean", "--yes"], env(slow(small), folder))
    children = wait_for_sleeping_restore(small, proc)
    proc.kill()
    proc.wait()
    assert gone(children) == []
    wait_no_sleepers(small)
    assert fingerprint(small) == before


@pytest.mark.parametrize("how, fmt, tools", [
    (["restore", "--into", "killed_target"], "custom", {"pg_restore"}),
    (["restore", "--into", "killed_target"], "plain", {"psql", "gzip"}),
    (["verify", "--restore-test"], "custom", {"pg_restore"})], ids=["restore-into", "restore-into-plain", "verify"])
def test_killed_runs_leave_no_database_behind_and_the_next_run_sweeps_only_theirs(cli, small, folder, how, fmt,
                                                                                  tools):
    if fmt == "plain":  # data restored after public.slow's: the decompressor still runs when minnoctl dies
        with psycopg.connect(small, autocommit=True) as conn:
            conn.execute("CREATE TABLE public.zpad AS SELECT repeat('x', 100) AS x FROM generate_series(1, 20000)")
    backup = make_backup(cli, small, folder, *(["--format", "plain", "--compress", "gzip"] if fmt == "plain" else []))
    before = databases(small)
    dead = subprocess.Popen(["true"])
    dead.wait()
    decoys = {  # a live run's temporary database, another host's, and one of an older minnoctl
        f"{TMP_PREFIX}{os.getpid()}_{HOST_TAG}_0live000": {"pid": os.getpid(), "host": socket.gethostname(),
                                                           "started": psutil.Process().create_time()},
        f"{TMP_PREFIX}{dead.pid}_000000_0other00": {"pid": dead.pid, "host": "elsewhere", "started": 0},
        f"minnoctl_verify_{uuid.uuid4().hex[:10]}": None,
    }
    with admin(small) as conn:
        for name, owner in decoys.items():
            conn.execute(f'CREATE DATABASE "{name}"')
            if owner:
                conn.execute(f'COMMENT ON DATABASE "{name}" IS ' + "'" +
                             json.dumps({"minnoctl_temporary": 1, **owner}) + "'")
    try:
        args = [how[0], str(backup), *how[1:]]
        proc = start(["backup", *args, *(["--yes"] if how[0] == "restore" else [])], env(slow(small), folder))
        children = wait_for_sleeping_restore(small, proc)
        assert tools <= {c.name() for c in children}
        proc.kill()
        proc.wait()
        assert gone(children) == []
        result = cli("backup", *args[:2], *(["--into", "next_target"] if how[0] == "restore" else ["--restore-test"]),
                     env=env(small, folder))  # the next run
        assert result.exit_code == 0, result.stderr
        left = databases(small) - before - set(decoys)
        assert left == ({"next_target"} if how[0] == "restore" else set()), left
        assert set(decoys) <= databases(small)  # only the dead run's were swept
    finally:
        drop_databases(small, [*decoys, "next_target", "killed_target"])


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_sigterm_and_sigint_stop_a_restore_with_one_line_and_leave_nothing(cli, small, folder, fmt):
    backup = make_backup(cli, small, folder, *(["--format", "plain", "--compress", "gzip"] if fmt == "plain" else []))
    before = databases(small)
    try:
        for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
            proc = start(["backup", "restore", str(backup), "--into", "stopped_target"], env(slow(small), folder))
            children = wait_for_sleeping_restore(small, proc)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == code, err
            assert "Traceback" not in err
            assert len([ln for ln in err.splitlines() if ln.startswith("minnoctl: error")]) == 1, err
            assert gone(children) == []
            assert databases(small) == before
    finally:
        drop_databases(small, ["stopped_target"])


def test_a_plain_restore_whose_decompressor_fails_is_a_failure(cli, small, folder):
    backup = make_backup(cli, small, folder, "--format", "plain", "--compress", "gzip")
    sql = gzip.decompress(backup.read_bytes())
    prefix = sql[: sql.index(b"\nCOPY ")]  # the schema, no data: psql would commit empty tables
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    damaged = packer.compress(prefix) + packer.flush(zlib.Z_SYNC_FLUSH)  # no end: gzip -d fails at EOF
    backup.write_bytes(damaged)
    mpath = backup.with_name(backup.name + ".manifest.json")
    manifest = json.loads(mpath.read_text())
    manifest.update(sha256=hashlib.sha256(damaged).hexdigest(), size=len(damaged))
    mpath.write_text(json.dumps(manifest))
    before = databases(small)
    result = cli("backup", "restore", str(backup), "--into", "from_damaged", env=env(small, folder))
    try:
        assert result.exit_code == ExitCode.BACKUP_INVALID, result.stderr
        assert "decompress" in one_error_line(result)
        assert databases(small) == before
    finally:
        drop_databases(small, ["from_damaged"])


# ---------------------------------------------------------------------------------------------
# 7. a backup belongs to one database of one server


def health_backup(cli, url: str, folder: Path) -> dict:
    result = cli("health", "--format", "json", "--only", "backup", "--backup-dir", str(folder),
                 "-t", "backup-age-warning=0s", env={"MINNO_DATABASE_URL": url})
    assert "Traceback" not in result.stderr, result.stderr
    return next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "backup")


def listed(cli, url: str, folder: Path, *args: str) -> list[dict]:
    result = cli("backup", "list", "--format", "json", *args, env=env(url, folder))
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_two_servers_and_databases_sharing_a_folder_never_see_each_others_backups(cli, server, pg15, folder):
    name = f"same_{uuid.uuid4().hex[:8]}"  # one database name on both servers
    a = with_db(server.admin_url, name)
    b = pg15.url(name)
    other = with_db(server.admin_url, f"other_{uuid.uuid4().hex[:8]}")  # another database on server a
    for url in (a, b, other):
        with admin(url) as conn:
            conn.execute(f'CREATE DATABASE "{conninfo_to_dict(url)["dbname"]}"')
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
    try:
        a_made = [make_backup(cli, a, folder, "--label", f"a{i}") for i in range(2)]
        assert health_backup(cli, b, folder)["status"] == "CRITICAL"  # b has no backup yet
        assert health_backup(cli, other, folder)["status"] == "CRITICAL"
        assert listed(cli, b, folder) == [] and listed(cli, other, folder) == []
        b_made = make_backup(cli, b, folder, "--label", "b0")
        assert "last backup" in health_backup(cli, b, folder)["value"]
        assert [r["file"] for r in listed(cli, b, folder)] == [b_made.name]
        assert {r["file"] for r in listed(cli, b, folder, "--all")} == {p.name for p in [*a_made, b_made]}
        result = cli("backup", "verify", "latest", env=env(b, folder))
        assert result.exit_code == 0 and b_made.name in result.stderr, result.stderr
        # prune for b keeps b's only backup and never touches a's
        result = cli("backup", "prune", "--keep-last", "1", "--yes", env=env(b, folder))
        assert result.exit_code == 0, result.stderr
        assert all(p.exists() for p in [*a_made, b_made])
        result = cli("backup", "prune", "--keep-last", "1", "--yes", env=env(a, folder))
        assert result.exit_code == 0, result.stderr
        assert [p.exists() for p in a_made] == [False, True] and b_made.exists()
        # --all prunes every database's backups by the same rules, each database apart
        b_more = [make_backup(cli, b, folder, "--label", f"b{i}") for i in (1, 2)]
        result = cli("backup", "prune", "--keep-last", "1", "--all", "--yes", env=env(a, folder))
        assert result.exit_code == 0, result.stderr
        assert a_made[1].exists() and b_made.exists()  # a's newest; b's newest verified (verify latest above)
        assert [p.exists() for p in b_more] == [False, True]
        # a manifest of an older minnoctl (no system identifier) matches by database name only
        mpath = a_made[1].with_name(a_made[1].name + ".manifest.json")
        legacy = json.loads(mpath.read_text())
        assert legacy.pop("system_identifier")
        mpath.write_text(json.dumps(legacy))
        assert [r["file"] for r in listed(cli, a, folder)] == [a_made[1].name]
    finally:
        for url in (a, b, other):
            drop_databases(url, [conninfo_to_dict(url)["dbname"]])


def test_a_pgbouncer_alias_does_not_hide_a_backup(cli, pg15, tmp_path_factory, folder):
    from test_pgbouncer import PGBOUNCER, Bouncer

    if not os.path.exists(PGBOUNCER):
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is missing in CI: .ci/run must install it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    name = f"real_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(pg15.url(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)")
    bouncer = Bouncer(tmp_path_factory.mktemp("bouncer_alias"), pg15.port, "session")
    ini = bouncer.folder / "pgbouncer.ini"
    ini.write_text(ini.read_text().replace("[databases]\n", f"[databases]\napp = host=127.0.0.1 port={pg15.port} "
                                           f"dbname={name}\n"))
    bouncer.start()
    try:
        made = make_backup(cli, bouncer.url("app"), folder)
        manifest = json.loads(made.with_name(made.name + ".manifest.json").read_text())
        assert manifest["database"] == name
        assert "last backup" in health_backup(cli, pg15.url(name), folder)["value"]
        assert [r["file"] for r in listed(cli, pg15.url(name), folder)] == [made.name]
        assert "last backup" in health_backup(cli, bouncer.url("app"), folder)["value"]
        # a restore through the session pool: its temporary database is renamed although the pool
        # keeps pg_restore's server connection
        result = cli("backup", "restore", "latest", "--into", f"{name}_copy", env=env(bouncer.url("app"), folder))
        assert result.exit_code == 0, result.stderr
        with psycopg.connect(pg15.url(f"{name}_copy")) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    finally:
        bouncer.stop()
        drop_databases(pg15.url("postgres"), [name, f"{name}_copy"])


# ---------------------------------------------------------------------------------------------
# 8. a backup is whole or absent


def test_a_short_idle_in_transaction_timeout_on_the_role_does_not_break_a_backup(cli, small, folder):
    with psycopg.connect(small, autocommit=True) as conn:
        user, db = conn.execute("SELECT current_user, current_database()").fetchone()
        conn.execute(f'ALTER ROLE "{user}" IN DATABASE "{db}" SET idle_in_transaction_session_timeout = \'100ms\'')
        conn.execute("INSERT INTO public.slow SELECT generate_series(1, 300000)")  # pg_dump takes a while
    result = cli("backup", "create", "--output-format", "json", env=env(small, folder))
    assert result.exit_code == 0, result.stderr
    made = Path(json.loads(result.stdout)["file"])
    assert made.exists() and made.with_name(made.name + ".manifest.json").exists()
    assert sum(json.loads(result.stdout)["rows"].values()) == 300153


def test_a_file_size_limit_at_the_manifest_keeps_nothing_and_says_one_line(small, folder):
    """`ulimit -f`: the dump fits, its manifest (holding a 100 kB label) does not."""
    environment = dict(os.environ, **env(small, folder))
    proc = subprocess.run(["bash", "-c", f"ulimit -f 60; exec '{sys.executable}' -m minnoctl backup create "
                           f"--schema-only --label {'x' * 100_000}"], env=environment, capture_output=True, text=True)
    assert proc.returncode == ExitCode.FAILURE, proc.stderr
    assert "Traceback" not in proc.stderr and "file-size limit" in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("minnoctl: error")]) == 1, proc.stderr
    assert list(folder.iterdir()) == []


def wait_for_dump_to_end(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until minnoctl's pg_dump child has come and gone: minnoctl is between the dump and the manifest."""
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "pg_dump never ended"
        try:
            kids = [p for p in psutil.Process(proc.pid).children() if p.name() == "pg_dump"]
        except psutil.NoSuchProcess:
            kids = []
        if kids:
            seen = kids[0]
        elif seen is not None:
            return
        time.sleep(0.002)


def whole_or_absent(folder: Path) -> None:
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.startswith(".partial-")], names
    dumps = [n for n in names if not n.endswith(".manifest.json")]
    assert all(f"{n}.manifest.json" in names for n in dumps) and len(names) == 2 * len(dumps), names


def test_sigint_or_sigkill_during_create_leaves_a_whole_backup_or_nothing(cli, small, folder):
    with psycopg.connect(small, autocommit=True) as conn:
        conn.execute("INSERT INTO public.slow SELECT generate_series(1, 200000)")
    environment = env(small, folder)
    for sig in (signal.SIGINT, signal.SIGKILL):
        proc = start(["backup", "create", "--compress", "none"], environment)
        wait_for_dump_to_end(proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        if sig == signal.SIGINT:
            assert "Traceback" not in err
            if proc.returncode != 0:
                assert proc.returncode == 130, err
                whole_or_absent(folder)
    result = cli("backup", "create", "--schema-only", env=environment)  # the next run sweeps a dead one's files
    assert result.exit_code == 0, result.stderr
    whole_or_absent(folder)
    assert listed(cli, small, folder)


def test_a_kill_between_the_two_renames_is_completed_or_undone_by_the_next_run(cli, small, folder):
    """What kill -9 leaves between renaming the dump and renaming its manifest: the dump under its
    name, the manifest still temporary. The next run completes a dump that matches it, removes one
    that does not: whole or absent, never a dump without its manifest."""
    whole, damaged = make_backup(cli, small, folder), make_backup(cli, small, folder, "--label", "damaged")
    dead = subprocess.Popen(["true"])
    dead.wait()
    for made in (whole, damaged):
        manifest = made.with_name(made.name + ".manifest.json")
        manifest.rename(folder / f".partial-{dead.pid}-{manifest.name}")
    damaged.write_bytes(damaged.read_bytes()[:-10])
    assert cli("backup", "create", "--schema-only", env=env(small, folder)).exit_code == 0
    whole_or_absent(folder)
    files = {r["file"] for r in listed(cli, small, folder)}
    assert whole.name in files and not damaged.exists() and damaged.name not in files


def test_an_orphan_dump_of_an_older_version_is_listed_and_pruned(cli, small, folder):
    made = make_backup(cli, small, folder)
    orphan = folder / re.sub(r"\d{8}T\d{6}Z", "20200101T000000Z", made.name)
    others = folder / "minno-someone-else-20200101T000000Z.dump"  # another database's, by its name
    for path in (orphan, others):  # dumps whose manifest an older minnoctl never wrote
        path.write_bytes(made.read_bytes())
        os.utime(path, (time.time() - 86400, time.time() - 86400))
    rows = {r["file"]: r for r in listed(cli, small, folder)}
    assert rows[orphan.name]["status"] == "orphan" and rows[made.name]["status"] == "ok"
    assert others.name not in rows and listed_all(cli, small, folder)[others.name]["status"] == "orphan"
    result = cli("backup", "verify", "latest", env=env(small, folder))
    assert result.exit_code == 0 and made.name in result.stderr, result.stderr
    result = cli("backup", "prune", "--keep-last", "5", "--yes", "--format", "json", env=env(small, folder))
    assert result.exit_code == 0, result.stderr
    assert {r["file"]: r["action"] for r in json.loads(result.stdout)}[orphan.name] == "delete"
    assert not orphan.exists() and made.exists() and others.exists()
    result = cli("backup", "prune", "--keep-last", "5", "--all", "--yes", env=env(small, folder))
    assert result.exit_code == 0 and not others.exists() and made.exists(), result.stderr


def listed_all(cli, url: str, folder: Path) -> dict[str, dict]:
    return {r["file"]: r for r in listed(cli, url, folder, "--all")}
