"""Health checks register themselves (issue 18 item 5): a check is one file with a decorator, a
module's own checks live in its folder (migrations/<module>/health/), `connection` and the
migrations check are registered checks like the others.

A throw-away check file in a copy of the migration set (MINNOCTL_MIGRATIONS_DIR) shows up in
`health --list`, in the JSON report and in the generated README table, owned by its module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from minnoctl import migrate, modules
from minnoctl.health import registry

REPO_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

PROBE = '''
from minnoctl.health import Check, Status, Threshold, check, show


@check("s18_probe", order=295, description="a throw-away check of the test", doc="the test's own check",
       levels="warning above 3 rows", thresholds=(Threshold("s18-probe-warning", 3, "count", "rows of the test"),))
def s18_probe(ctx):
    rows = ctx.one("SELECT count(*) FROM slackbot.active_sessions")[0]
    limit = ctx.t("s18-probe-warning")
    return Check("s18_probe", Status.WARNING if limit is not None and rows > limit else Status.OK,
                 f"{rows} active sessions", f"warning above {show(limit, 'count')}",
                 perfdata={"s18_rows": (rows, "", limit, None)})
'''


def _set_with(tmp_path: Path, module: str, name: str, source: str) -> Path:
    root = tmp_path / "set"
    shutil.copytree(REPO_MIGRATIONS, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / module / "health" / name).parent.mkdir(exist_ok=True)
    (root / module / "health" / name).write_text(source, encoding="utf-8")
    return root


def test_module_checks_live_in_the_module_folders_and_are_owned_by_them():
    owners = {s.name: s.owner for s in registry.checks()}
    assert owners["tokens"] == ("minno", "assistant") and owners["key_fields"] == ("minno",)
    assert owners["secrets"] == owners["port_ranges"] == ("supervisor",) and owners["table_stats"] == ("slackbot",)
    for name in ("tokens", "key_fields", "secrets", "port_ranges", "table_stats"):
        source = Path(registry.by_name()[name].source)
        assert source.parent.name == "health" and source.parent.parent.parent.resolve() == REPO_MIGRATIONS.resolve()
    assert not [s.name for s in registry.checks() if s.owner and Path(s.source).parent.name != "health"]


def test_stock_yoyo_reads_only_the_migrations_of_a_module_folder():
    """yoyo takes the *.py and *.sql files directly inside a source folder: health/ is never a migration."""
    from yoyo import read_migrations

    for module in modules.MODULES:
        folder = REPO_MIGRATIONS / module.migrations_folder
        ids = [m.id for m in read_migrations(str(folder))]
        ours = [f.path.stem for f in migrate.load_set(REPO_MIGRATIONS) if f.module == module.name]
        assert ids == ours, module.name
    assert list((REPO_MIGRATIONS / "minno" / "health").glob("*.py"))


def test_connection_and_migrations_are_registered_checks_and_the_probes_run_them():
    by_name = {s.name: s for s in registry.registered()}
    assert by_name["connection"].threshold_names == ("rtt-warning", "rtt-critical")
    assert [s.name for s in registry.probe("live")] == ["connection", "server_version"]
    assert [s.name for s in registry.probe("ready")] == ["connection", "recovery", "migrations"]
    # one migrations check: the report's and the readiness probe's are the same function
    assert registry.probe("ready")[2].run is registry.by_name()["migrations"].run
    assert "recovery" not in registry.by_name()  # a probe's own check is not part of the report


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_a_new_check_file_in_a_module_folder_is_listed_run_and_documented(cli, migrated, database, tmp_path,
                                                                            monkeypatch):
    root = _set_with(tmp_path, "slackbot", "s18_probe.py", PROBE)
    env = {"MINNO_DATABASE_URL": migrated, "MINNOCTL_MIGRATIONS_DIR": str(root)}

    listed = cli("health", "--list", "--format", "json", env=env)
    assert listed.exit_code == 0, listed.stderr
    rows = json.loads(listed.stdout)
    names = [r["check"] for r in rows]
    assert names.index("s18_probe") == names.index("port_ranges") + 1  # order 295: between 290 and 300
    probe = rows[names.index("s18_probe")]
    assert probe["module"] == "slackbot" and probe["description"] == "a throw-away check of the test"
    assert probe["thresholds"] == "s18-probe-warning=3 (MINNOCTL_HEALTH_S18_PROBE_WARNING)"

    report = cli("health", "--format", "json", env=env)
    doc = json.loads(report.stdout)
    found = {c["name"]: c for c in doc["checks"]}["s18_probe"]
    assert found["status"] == "OK" and found["value"] == "0 active sessions" and found["metrics"] == {"s18_rows": 0}
    assert [c["name"] for c in doc["checks"]][-3:] == ["port_ranges", "s18_probe", "table_stats"]

    only = cli("health", "--only", "s18-probe", "-t", "s18-probe-warning=off", "--format", "nagios", env=env)
    assert only.exit_code == 0 and only.stdout.startswith("MINNOCTL OK - 1 checks OK | s18_rows=0"), only.stdout

    skipped = cli("health", "--only", "s18_probe", "--format", "json", env={**env, "MINNO_DATABASE_URL": database})
    assert json.loads(skipped.stdout)["checks"][0]["value"] == "skipped: the slackbot module is not installed"

    monkeypatch.setenv("MINNOCTL_MIGRATIONS_DIR", str(root))
    assert "| `s18_probe` | the test's own check | warning above 3 rows |" in registry.markdown_table()
    monkeypatch.delenv("MINNOCTL_MIGRATIONS_DIR")
    assert "s18_probe" not in registry.by_name()  # the package's own set is unchanged
    assert "s18_probe" not in [r["check"] for r in json.loads(cli("health", "--list", "--format", "json").stdout)]


def test_a_second_check_of_the_same_name_is_one_line_naming_both_files(cli, tmp_path):
    root = _set_with(tmp_path, "chatbot", "tokens.py", PROBE.replace('"s18_probe"', '"tokens"', 1))
    result = cli("health", "--list", env={"MINNOCTL_MIGRATIONS_DIR": str(root)})
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert "two health checks are named tokens" in lines[0]
    assert "minno/health/tokens.py" in lines[0] and "chatbot/health/tokens.py" in lines[0]
