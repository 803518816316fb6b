"""`minnoctl seed` gives a healthy database; `seed --scenario overdue` adds the expired and overdue
rows (expired tokens and secrets, rows past their retention) that the cleanup and health tests use.
On real servers (the embedded PostgreSQL 18 and Debian's 15)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import psycopg
import pytest

from minnoctl import modules, seed
from minnoctl.errors import ExitCode
from test_seed import env_for, installed, one_error_line, seed_rows

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"  # each module's seed/ folder
# the health checks that look at the seeded data (the others look at the server and the jobs)
DATA_CHECKS = ("tokens", "secrets", "key_fields", "port_ranges", "sequences", "table_stats")


def scenario_rows(module: str) -> dict[str, list[dict]]:
    path = MIGRATIONS / module / "seed" / "overdue.json"
    return json.loads(path.read_text())["tables"] if path.exists() else {}


def health(cli, url: str, *args: str) -> dict:
    result = cli("health", "--format", "json", *args, env=env_for(url))
    assert "Traceback" not in result.stderr, result.stderr
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def due(cli, url: str) -> dict[str, int]:
    result = cli("cleanup", "--list", "--format", "json", env=env_for(url))
    assert result.exit_code == 0, result.stderr
    return {t["task"]: t["due_now"] for t in json.loads(result.stdout)}


def test_the_default_seed_is_healthy_and_nothing_in_it_is_due(cli, migrated, kek):
    result = cli("seed", "--yes", env=env_for(migrated, kek))
    assert result.exit_code == 0, result.stderr
    checks = health(cli, migrated)
    bad = {n: (c["status"], c["value"]) for n, c in checks.items() if c["status"] in ("WARNING", "CRITICAL")}
    assert bad == {}, bad
    for name in DATA_CHECKS:
        assert checks[name]["status"] == "OK", checks[name]
    assert all(n in (0, None) for n in due(cli, migrated).values()), due(cli, migrated)


TOKEN_TIMES = {("minno", "oauth_tokens"): ("expires_at",),
               ("assistant", "user_tokens"): ("google_expires_at", "slack_expires_at")}
WEEK = dt.timedelta(days=7)


def test_the_default_seed_stays_healthy_for_weeks():
    """Every time is relative to the moment of seeding, and nothing in the default files expires,
    or falls due for rotation, within health's windows for at least a week after it."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for m in modules.MODULES:
        for table, rows in seed_rows(m.name).items():
            for row in rows:
                for column, value in row.items():
                    if column.endswith(("_at", "timestamp", "last_activity", "last_check")) and value is not None:
                        assert isinstance(value, str) and value.startswith("now"), (m.name, table, column, value)
                for column in TOKEN_TIMES.get((m.name, table), ()):
                    if row.get(column) is not None:
                        assert seed.parse_time(row[column], now) > now + 2 * WEEK, (table, column, row[column])
    supervisor = seed_rows("supervisor")
    for row in supervisor["secrets"]:
        if row.get("expires_at"):
            assert seed.parse_time(row["expires_at"], now) > now + dt.timedelta(days=30) + WEEK, row["key_name"]
    for row in supervisor["secret_rotation_schedule"]:
        assert seed.parse_time(row["next_rotation_at"], now) > now + 2 * WEEK, row["id"]


def test_the_overdue_scenario_adds_what_cleanup_and_health_find(cli, migrated, kek):
    result = cli("seed", "--scenario", "overdue", "--yes", "--format", "json", env=env_for(migrated, kek))
    assert result.exit_code == 0, result.stderr
    assert "with scenario overdue" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["scenario"] == "overdue"
    counts = {c["table"]: c["rows"] for c in doc["tables"]}
    for m in installed(migrated):
        extra = scenario_rows(m.name)
        for table, rows in seed_rows(m.name).items():
            assert counts[f"{m.schema}.{table}"] == len(rows) + len(extra.get(table, [])), table
    checks = health(cli, migrated, "--only", "tokens,secrets")
    assert checks["tokens"]["status"] == "WARNING" and " expired" in checks["tokens"]["value"]
    assert checks["secrets"]["status"] == "CRITICAL"
    for part in ("1 expired", "expiring within 30 days", "rotation overdue", "rotation due within 7 days"):
        assert part in checks["secrets"]["value"], checks["secrets"]["value"]
    found = due(cli, migrated)
    assert all(n for t, n in found.items() if t != "port-leases"), found  # every task has work
    # seeding again without the scenario takes its rows away: the default is healthy again
    assert cli("seed", "--yes", env=env_for(migrated, kek)).exit_code == 0
    assert health(cli, migrated, "--only", "tokens,secrets")["secrets"]["status"] == "OK"


def test_the_scenario_files_name_their_module_and_only_its_tables():
    """Each scenario file names its module, says what it adds, and fills only tables of the module's
    default file (which loads first; what the rows do is checked by loading them, above)."""
    files = sorted(MIGRATIONS.glob("*/seed/overdue.json"))
    assert files
    for path in files:
        module = modules.get(path.parent.parent.name)
        doc = json.loads(path.read_text())
        assert doc["module"] == module.name and doc["description"]
        assert set(doc["tables"]) <= set(seed_rows(module.name)), path.name
        assert all(doc["tables"].values()), path.name


@pytest.mark.parametrize("args, phrase, code", [
    (["--scenario", "nope"], "--scenario: unknown scenario 'nope'; use one of: overdue", ExitCode.USAGE),
    (["--scenario", "overdue", "--scale", "10"], "--scenario goes without --scale", ExitCode.USAGE),
])
def test_bad_scenarios_are_one_line_and_change_nothing(cli, migrated, kek, args, phrase, code):
    with psycopg.connect(migrated) as conn:
        before = conn.execute("SELECT count(*) FROM minno.workspaces").fetchone()[0]
    result = cli("seed", *args, "--yes", env=env_for(migrated, kek))
    assert result.exit_code == code
    assert phrase in one_error_line(result)
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM minno.workspaces").fetchone()[0] == before


def test_help_names_the_scenario(cli):
    result = cli("seed", "--help")
    assert result.exit_code == 0
    assert "--scenario" in result.stdout and "overdue" in result.stdout
    readme = (MIGRATIONS.parent / "README.md").read_text()
    assert "minnoctl seed --scenario overdue" in readme
