"""Targets and fleet runs (issue 19 items 1 and 2), on real servers: Debian's PostgreSQL 15 and a
second PostgreSQL 18 on loopback, tenant databases on both, found by the targets file's discovery.

Every test here failed on main before the targets file existed (no --target / --group option: exit 2)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.pgcluster import PASSWORD

MODULES = "minno,supervisor"


def _databases(cluster, prefix: str, n: int) -> list[str]:
    names = [f"{prefix}{i:02d}" for i in range(1, n + 1)]
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    return names


def _drop(cluster, names: list[str]) -> None:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fleet(pg15, pg18tcp, tmp_path):
    """Three tenant databases on PostgreSQL 15 and two on 18, and a targets file naming them."""
    prefix = f"tn{uuid.uuid4().hex[:6]}_"
    on15, on18 = _databases(pg15, prefix, 3), _databases(pg18tcp, prefix, 2)
    (tmp_path / "minnoctl.toml").write_text(f"""
[targets.t15]
url = "{pg15.url('postgres')}"
discover = "{prefix}%"
tags = ["tenant", "pg15"]

[targets.t18]
url = "{pg18tcp.url('postgres')}"
discover_query = "SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%' ORDER BY 1"
tags = ["tenant"]

[targets.solo]
url = "{pg15.url(on15[0])}"

[groups]
tenants = ["t15", "t18"]
""")
    yield {"prefix": prefix, "on15": on15, "on18": on18}
    _drop(pg15, on15)
    _drop(pg18tcp, on18)


def _applied(url: str) -> int:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT to_regclass('_yoyo_migration') IS NOT NULL").fetchone()[0]
        return conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] if found else 0


# -- the targets file ---------------------------------------------------------------------------


@pytest.mark.parametrize("body, says", [
    ('[targets.a]\nurl = "postgresql://u:hunter2@h/db"\n', "password written in its url"),
    ('[targets.a]\nurl = "postgresql://u@h/db"\ncolour = "red"\n', "unknown key 'colour'"),
    ('[targets.a]\nurl = "postgresql://u@h/db"\nservice = "x"\n', "needs one of url or service"),
    ('[targets.a]\nurl = "postgresql://u@h/db"\npassword_env = "A"\npassword_file = "f"\n', "one way to the password"),
    ('[targets.a]\nurl = "postgresql://u@h/db"\n[groups]\ng = ["b"]\n', "'b', which is not a target"),
    ('[targets.a]\nurl = "postgresql://u@h/db"\n[groups]\ng = ["tag:x"]\n', "no target has the tag x"),
    ('[targets.a\nurl = 1\n', "is not valid TOML"),
    ('[targets."a b"]\nurl = "postgresql://u@h/db"\n', "target name 'a b'"),
    ('[servers.a]\nurl = "x"\n', "unknown table 'servers'"),
    ('[targets.a]\nurl = "mysql://u@h/db"\n', "not a valid PostgreSQL URL"),
])
def test_a_bad_targets_file_is_one_line_and_exit_3(cli, tmp_path, body, says):
    (tmp_path / "minnoctl.toml").write_text(body)
    result = cli("health", "--target", "a")
    assert result.exit_code == 3, result.stderr
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_no_targets_file_unknown_names_and_two_databases(cli, tmp_path):
    result = cli("migrate", "status", "--target", "main")
    assert result.exit_code == 3 and "no targets file" in result.stderr and "MINNOCTL_TARGETS" in result.stderr
    missing = cli("health", "--target", "main", env={"MINNOCTL_TARGETS": str(tmp_path / "nope.toml")})
    assert missing.exit_code == 3 and "not a file" in missing.stderr
    (tmp_path / "minnoctl.toml").write_text('[targets.main]\nurl = "postgresql://u@127.0.0.1:1/db"\n'
                                            '[groups]\neu = ["main"]\n')
    unknown = cli("health", "--target", "mian")
    assert unknown.exit_code == 2 and "no target 'mian'" in unknown.stderr and "targets: main" in unknown.stderr
    group = cli("health", "--group", "us")
    assert group.exit_code == 2 and "no group 'us'" in group.stderr and "groups: eu" in group.stderr
    both = cli("health", "--target", "main", "--database-url", "postgresql://u@127.0.0.1:1/x")
    assert both.exit_code == 2 and "give one of them" in both.stderr
    lone = cli("health", "--parallel", "3")
    assert lone.exit_code == 2 and "--parallel" in lone.stderr
    bad = cli("health", "--group", "eu", "--parallel", "0")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_single_target_runs_any_command_with_its_secret_by_reference(cli, pg15, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    (tmp_path / "minnoctl.toml").write_text(f"""
[targets.byenv]
url = "{pg15.url('pwdb', user='pwuser')}"
password_env = "PWDB_PASSWORD"

[targets.byfile]
url = "{pg15.url('pwdb', user='pwuser')}"
password_file = "{secret}"

[targets.nopw]
url = "{pg15.url('pwdb', user='pwuser')}"
""")
    env = {"PWDB_PASSWORD": PASSWORD}
    shown = cli("config", "show", "--format", "json", "--target", "byenv", env=env)
    assert shown.exit_code == 0, shown.stderr
    assert "target byenv" in shown.stdout and PASSWORD not in shown.stdout
    for name in ("byenv", "byfile"):
        result = cli("health", "--live", "--target", name, env=env)
        assert result.exit_code == 0, (name, result.stderr)
        assert PASSWORD not in result.stdout + result.stderr
    unset = cli("health", "--live", "--target", "byenv")
    assert unset.exit_code == 3 and "PWDB_PASSWORD, which is not set" in unset.stderr
    refused = cli("health", "--live", "--target", "nopw", env={"PGPASSFILE": str(tmp_path / "none")})
    assert refused.exit_code == 2 and PASSWORD not in refused.stdout + refused.stderr  # CRITICAL: no password
    secret.write_text("")
    empty = cli("health", "--live", "--target", "byfile")
    assert empty.exit_code == 3 and "is empty" in empty.stderr


def test_commands_for_one_database_refuse_a_group(cli, fleet):
    for args in (("seed", "--yes"), ("token", "rotate"), ("ports", "list"), ("db", "init", "--yes"),
                 ("migrate", "rollback", "--yes")):
        result = cli(*args, "--group", "tenants")
        assert result.exit_code == 2, (args, result.stderr)
        assert "runs on one database" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    discovering = cli("seed", "--yes", "--target", "t15")
    assert discovering.exit_code == 2 and "runs on one database" in discovering.stderr
    serve = cli("health", "--serve", ":0", "--group", "tenants")
    assert serve.exit_code == 2 and "--serve works on one database" in serve.stderr
    # a bad option is the invocation's, said once, before any target runs (nagios: UNKNOWN, exit 3)
    probes = cli("health", "--live", "--ready", "--group", "tenants", "--format", "nagios")
    assert probes.exit_code == 3 and probes.stdout.startswith("MINNOCTL UNKNOWN - --live and --ready") and \
        len(probes.stdout.splitlines()) == 1, probes.stdout
    threshold = cli("health", "--group", "tenants", "-t", "bogus=1")
    assert threshold.exit_code == 2 and len(threshold.stderr.strip().splitlines()) == 1 and not threshold.stdout


# -- fleet runs -----------------------------------------------------------------------------------


def test_migrate_over_discovered_tenants_plan_apply_status_verify(cli, fleet, pg15, pg18tcp):
    plan = cli("migrate", "--dry-run", "--modules", MODULES, "--group", "tenants", "--format", "json")
    assert plan.exit_code == 0, plan.stderr
    doc = json.loads(plan.stdout)
    names = [t["target"] for t in doc["targets"]]
    assert names == [f"t15/{d}" for d in fleet["on15"]] + [f"t18/{d}" for d in fleet["on18"]]
    for t in doc["targets"]:
        assert t["server"] in (f"127.0.0.1:{pg15.port}", f"127.0.0.1:{pg18tcp.port}")
        assert t["database"] == t["target"].split("/")[1] and t["status"] == "ok"
        assert t["result"]["pending"], t  # the plan of that database
    assert all(_applied(pg15.url(d)) == 0 for d in fleet["on15"])  # a dry run changed nothing
    gate = cli("migrate", "--dry-run", "--exit-code", "--modules", MODULES, "--group", "tenants")
    assert gate.exit_code == 9, gate.stderr  # PENDING, the worst
    applied = cli("migrate", "--modules", MODULES, "--group", "tenants", "--parallel", "3")
    assert applied.exit_code == 0, applied.stdout + applied.stderr
    assert "5 target(s): 5 ok; exit 0" in applied.stdout
    counts = {_applied(c.url(d)) for c, ds in ((pg15, fleet["on15"]), (pg18tcp, fleet["on18"])) for d in ds}
    assert len(counts) == 1 and counts.pop() > 0
    status = cli("migrate", "status", "--group", "tenants", "--format", "ndjson")
    assert status.exit_code == 0, status.stderr
    records = [json.loads(line) for line in status.stdout.splitlines()]
    assert all({"target", "server", "database"} <= set(r) for r in records)
    rows = [r for r in records if r["record"] == "row"]
    assert rows and {r["state"] for r in rows if r["module"] in MODULES.split(",")} == {"applied"}
    assert cli("migrate", "verify", "--all-targets").exit_code == 0
    again = cli("migrate", "--modules", MODULES, "--group", "tag:tenant", "--format", "csv")
    assert again.exit_code == 0 and again.stdout.count("nothing to apply") == 5, again.stdout


def test_health_runs_server_checks_once_per_server_and_exits_with_the_worst(cli, fleet, pg15, pg18tcp, tmp_path):
    result = cli("health", "--group", "tenants", "--skip", "slow_queries", "--format", "ndjson")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all({"target", "server", "database"} <= set(r) for r in records)
    checks = [r for r in records if r["record"] == "row"]
    server_checks = [r for r in checks if r["scope"] == "server"]
    per_server: dict[str, set] = {}
    for r in server_checks:
        assert r["name"] not in per_server.setdefault(r["server"], set()), r  # once per server
        per_server[r["server"]].add(r["name"])
    assert set(per_server) == {f"127.0.0.1:{pg15.port}", f"127.0.0.1:{pg18tcp.port}"}
    assert {"connections", "xid_age", "long_queries"} <= per_server[f"127.0.0.1:{pg15.port}"]
    databases = {r["target"] for r in checks if r["name"] == "migrations"}
    assert len(databases) == 5  # the database checks of every tenant
    summary = [r for r in records if r["record"] == "target"]
    assert len(summary) == 5 and result.exit_code == max(
        (r["exit_code"] for r in summary), key=lambda c: {0: 0, 3: 1, 1: 2, 2: 3}[c])

    # a target that does not answer: CRITICAL, the worst; the others are still checked
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    closed = port.getsockname()[1]
    port.close()
    toml = tmp_path / "minnoctl.toml"
    toml.write_text(toml.read_text().replace("[groups]", f'[targets.gone]\nurl = "postgresql://u@127.0.0.1:{closed}/x"'
                                             '\n\n[groups]') + 'broken = ["gone", "solo"]\n')
    broken = cli("health", "--group", "broken", "--format", "json")
    assert broken.exit_code == 2, broken.stdout
    doc = json.loads(broken.stdout)
    by_name = {t["target"]: t for t in doc["targets"]}
    assert by_name["gone"]["status"] == "critical" and "refused" in by_name["gone"]["summary"], by_name["gone"]
    assert len(by_name["solo"]["result"]["checks"]) > 10  # checked all the same
    nagios = cli("health", "--group", "broken", "--format", "nagios")
    assert nagios.exit_code == 2 and nagios.stdout.startswith("MINNOCTL CRITICAL - 2 targets") and \
        len(nagios.stdout.splitlines()) == 1


def test_openmetrics_of_a_fleet_is_one_exposition(cli, fleet):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    result = cli("health", "--group", "tenants", "--only", "connection,migrations,connections",
                 "--format", "openmetrics")
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    targets = {s.labels["target"] for s in families["minnoctl_health_overall_status"].samples}
    assert len(targets) == 5
    assert result.stdout.count("# HELP minnoctl_health_status ") == 1


def test_a_failed_canary_stops_the_rollout(cli, fleet, pg15, tmp_path):
    # the first tenant cannot take the migration: a table of the same name, not minnoctl's
    first = fleet["on15"][0]
    with psycopg.connect(pg15.url(first), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA minno; CREATE TABLE minno.workspaces (oops int)")
    result = cli("migrate", "--modules", MODULES, "--group", "tenants", "--canary", "1", "--format", "json")
    assert result.exit_code not in (0, 2), result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["stopped_by_canary"] == f"t15/{first}"
    status = [t["status"] for t in doc["targets"]]
    assert status[0] == "failed" and set(status[1:]) == {"skipped"}, status
    assert "canary" in result.stderr
    assert all(_applied(pg15.url(d)) == 0 for d in fleet["on15"][1:])  # nothing else was touched


def test_cleanup_and_backup_create_over_a_group(cli, fleet, pg15, pg18tcp, tmp_path):
    assert cli("migrate", "--modules", MODULES, "--group", "tenants").exit_code == 0
    cleaned = cli("cleanup", "--group", "tenants", "--format", "json")
    assert cleaned.exit_code == 0, cleaned.stdout + cleaned.stderr
    assert [t["status"] for t in json.loads(cleaned.stdout)["targets"]] == ["ok"] * 5
    out = tmp_path / "backups"
    out.mkdir()
    made = cli("backup", "create", "--output-dir", str(out), "--group", "tenants", "--output-format", "json")
    assert made.exit_code == 0, made.stdout + made.stderr
    files = [t["result"]["file"] for t in json.loads(made.stdout)["targets"]]
    assert len(set(files)) == 5 and all(Path(f).is_file() for f in files)


def test_discovery_that_fails_is_that_targets_failure(cli, fleet, tmp_path):
    toml = tmp_path / "minnoctl.toml"
    toml.write_text(toml.read_text().replace("[groups]", '[targets.oops]\nurl = "postgresql://postgres@127.0.0.1:'
                                             f'{fleet_port(toml)}/postgres"\ndiscover_query = "SELECT 1/0"\n\n'
                                             '[groups]') + 'mixed = ["oops", "solo"]\n')
    result = cli("health", "--group", "mixed", "--only", "connection", "--format", "json")
    doc = json.loads(result.stdout)
    status = {t["target"]: (t["status"], t["summary"]) for t in doc["targets"]}
    assert status["solo"][0] == "ok" and status["oops"][0] != "ok", status
    assert "division by zero" in status["oops"][1]


def fleet_port(toml: Path) -> str:
    return toml.read_text().split("127.0.0.1:", 1)[1].split("/", 1)[0]


def test_a_target_that_hangs_times_out_and_the_others_finish(run_minnoctl, fleet, tmp_path):
    """A server that accepts and never answers: --target-timeout ends its part; a real process, so
    the thread still waiting in connect() does not hold the exit back."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    toml = tmp_path / "minnoctl.toml"
    toml.write_text(toml.read_text().replace("[groups]", f'[targets.hang]\nurl = "postgresql://u@127.0.0.1:'
                                             f'{silent.getsockname()[1]}/x"\n\n[groups]') + 'slow = ["hang", "solo"]\n')
    try:
        started = time.monotonic()
        result = run_minnoctl("health", "--group", "slow", "--only", "connection", "--target-timeout", "1s",
                              "--format", "json", env={"DB_CONNECTION_TIMEOUT": "30s"}, timeout=60)
        took = time.monotonic() - started
    finally:
        stop.set()
        silent.close()
    assert took < 20, took  # not the 30 s connect timeout
    doc = json.loads(result.stdout)
    status = {t["target"]: t["status"] for t in doc["targets"]}
    assert status == {"hang": "timeout", "solo": "ok"}, (status, result.stderr)
    assert result.returncode == 2


def _hold_migrate_lock(url: str) -> psycopg.Connection:
    """Another session holding minnoctl's migrate lock on one database: its migrate waits there."""
    from minnoctl import locks

    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (locks.NAMESPACE, locks.KEYS["migrate"]))
    return conn


def _start(args: list[str], env: dict[str, str]):
    import os
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "minnoctl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def _wait_migrated(urls: list[str], deadline: float) -> None:
    """Until every database has the same, unchanging, number of applied migrations (all of them)."""
    last = None
    while True:
        counts = [_applied(u) for u in urls]
        if counts[0] > 0 and len(set(counts)) == 1 and counts == last:
            return
        assert time.monotonic() < deadline, f"the other tenants were not migrated: {counts}"
        last = counts
        time.sleep(1.0)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_fleet_migrate_stopped_by_a_signal_leaves_every_database_whole(fleet, pg15, pg18tcp, tmp_path, sig):
    """SIGTERM: the summary still comes, the waiting target `interrupted`, exit 143. kill -9: no summary;
    either way each database is migrated or untouched, and the next run finishes the rest."""
    import signal

    env = {"MINNOCTL_TARGETS": str(tmp_path / "minnoctl.toml")}
    waiting = fleet["on18"][-1]
    holder = _hold_migrate_lock(pg18tcp.url(waiting))
    try:
        proc = _start(["migrate", "--modules", MODULES, "--group", "tenants", "--lock-timeout", "60s",
                       "--format", "json"], env)
        deadline = time.monotonic() + 60
        _wait_migrated([pg15.url(d) for d in fleet["on15"]] + [pg18tcp.url(d) for d in fleet["on18"][:-1]], deadline)
        proc.send_signal(getattr(signal, sig))
        out, err = proc.communicate(timeout=30)
    finally:
        holder.close()
    assert _applied(pg18tcp.url(waiting)) == 0
    if sig == "SIGTERM":
        assert proc.returncode == 143, err
        doc = json.loads(out)
        status = {t["target"]: t["status"] for t in doc["targets"]}
        assert status[f"t18/{waiting}"] == "interrupted" and "SIGTERM" in err, (status, err)
        assert [s for n, s in status.items() if n != f"t18/{waiting}"] == ["ok"] * 4
    else:
        assert proc.returncode == -9
    again = _start(["migrate", "--modules", MODULES, "--group", "tenants"], env)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, out + err
    assert _applied(pg18tcp.url(waiting)) > 0
    verify = _start(["migrate", "verify", "--group", "tenants"], env)
    out, err = verify.communicate(timeout=120)
    assert verify.returncode == 0, out + err


def test_bash_completes_target_and_group_names(tmp_path):
    from test_completions import complete_bash

    (tmp_path / "minnoctl.toml").write_text('[targets.main]\nurl = "postgresql://u@h/db"\ntags = ["eu"]\n'
                                            '[targets.maple]\nservice = "m"\n[groups]\nmost = ["main"]\n')
    assert complete_bash(tmp_path, "minnoctl", "health", "--target", "ma") == ["main", "maple"]
    assert complete_bash(tmp_path, "minnoctl", "migrate", "status", "--group", "") == ["most", "tag:eu"]
    (tmp_path / "minnoctl.toml").write_text("not toml [")
    assert complete_bash(tmp_path, "minnoctl", "health", "--target", "") in ([], [""])  # nothing offered
