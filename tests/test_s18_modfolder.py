"""A module is one folder (issue 18, item 4): a seventh module is a new folder under the migration
set — migrations, module.toml, retention SQL, seed data — and db init, migrate status, seed,
cleanup and health pick it up with no other change. A bad module.toml is one line and exit 3.
The packaged wheel carries every module's folder, and the installed package reads its registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest

from minnoctl import modules
from minnoctl.errors import ConfigError, ExitCode

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = REPO / "migrations"

ZEBRA_TOML = """\
schema = "zebra"
description = "a throw-away module of the tests"
source = "none"
depends = ["minno"]

[[retention]]
name = "zebra-events"
action = "delete"
description = "events older than DAYS"
default_days = 30
table = "zebra.events"
key = "id"
time_column = "created_at"
due = "t.created_at < %(cutoff)s"
"""

# the four rows of zebra's seed: two past the 30 days of its retention task, two within them
SEED = {"module": "zebra", "description": "events, two of them old",
        "tables": {"events": [{"id": 1, "created_at": "now-40d", "body": "old"},
                              {"id": 2, "created_at": "now-31d", "body": "old"},
                              {"id": 3, "created_at": "now-29d", "body": "recent"},
                              {"id": 4, "created_at": "now", "body": "new"}]}}


def _minno_last() -> str:
    return sorted(p.stem for p in (MIGRATIONS / "minno").glob("[0-9]*.sql") if not p.name.endswith(".rollback.sql"))[-1]


def zebra_set(tmp_path: Path, toml: str = ZEBRA_TOML) -> Path:
    """A copy of the migration set with a seventh module folder, zebra."""
    root = tmp_path / "set"
    shutil.copytree(MIGRATIONS, root)
    zebra = root / "zebra"
    (zebra / "retention").mkdir(parents=True)
    (zebra / "seed").mkdir()
    (zebra / "module.toml").write_text(toml)
    (zebra / "0001_zebra_events.sql").write_text(
        f"-- zebra's events\n-- depends: {_minno_last()}\n\nSET LOCAL search_path = zebra, public;\n"
        "CREATE SCHEMA IF NOT EXISTS zebra;\n\n"
        "CREATE TABLE events (id bigint PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT now(), body text);\n"
        "CREATE INDEX idx_events_created_at ON events (created_at);\n")
    (zebra / "0001_zebra_events.rollback.sql").write_text(
        "-- Undo 0001_zebra_events.sql\n\nSET LOCAL search_path = zebra, public;\n\n"
        "DROP TABLE events;\nDROP SCHEMA IF EXISTS zebra;\n")
    (zebra / "retention" / "zebra-events.sql").write_text(
        "DELETE FROM zebra.events WHERE ctid = ANY(%(tids)s::tid[])\n")
    (zebra / "seed" / "default.json").write_text(json.dumps(SEED))
    return root


def zebra_rows(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT id, body FROM zebra.events ORDER BY id").fetchall()


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_a_seventh_module_is_one_folder(cli, database, tmp_path):
    root = zebra_set(tmp_path)
    env = {"MINNO_DATABASE_URL": database, "MINNOCTL_MIGRATIONS_DIR": str(root)}

    init = cli("db", "init", "--modules", "zebra", "--yes", env=env)
    assert init.exit_code == 0, init.stderr
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('zebra.events')").fetchone()[0] is not None
        assert {r[0] for r in conn.execute("SELECT DISTINCT module FROM minnoctl.migrations")} == {"minno", "zebra"}
    status = cli("migrate", "status", "--format", "json", env=env)
    assert status.exit_code == 0, status.stderr
    rows = {r["id"]: r for r in json.loads(status.stdout)}
    assert rows["zebra/0001_zebra_events"]["state"] == "applied"

    seeded = cli("seed", "--modules", "zebra", "--yes", env=env)
    assert seeded.exit_code == 0, seeded.stderr
    assert [r[0] for r in zebra_rows(database)] == [1, 2, 3, 4]

    listed = cli("cleanup", "--list", "--format", "json", env=env)
    assert listed.exit_code == 0, listed.stderr
    tasks = {t["task"]: t for t in json.loads(listed.stdout)}
    assert tasks["zebra-events"]["module"] == "zebra" and tasks["zebra-events"]["action"] == "delete"
    assert tasks["zebra-events"]["due_now"] == 2
    assert "not installed" in tasks["chatbot-conversations"]["description"]  # the others still listed

    dry = cli("cleanup", "--dry-run", "--only", "zebra-events", "--format", "json", env=env)
    assert dry.exit_code == 0, dry.stderr
    assert len(zebra_rows(database)) == 4
    run = cli("cleanup", "--format", "json", env=env)
    assert run.exit_code == 0, run.stderr
    done = {t["task"]: t for t in json.loads(run.stdout)["tasks"]}
    assert done["zebra-events"]["rows"] == 2 and done["zebra-events"]["status"] == "ok"
    assert zebra_rows(database) == [(3, "recent"), (4, "new")]

    health = cli("health", "--format", "json", env=env)
    doc = json.loads(health.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["migrations"]["status"] == "OK", checks["migrations"]
    # the checks that walk the module schemas see zebra's: its migrations, its tables' drift baseline
    assert checks["schema_drift"]["status"] == "OK", checks["schema_drift"]
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT migration_id FROM minnoctl.schema_baseline WHERE module = 'zebra'").fetchone() \
            == ("zebra/0001_zebra_events",)
    minno = len([p for p in (MIGRATIONS / "minno").glob("[0-9]*.sql") if not p.name.endswith(".rollback.sql")])
    assert checks["migrations"]["value"] == f"{minno + 1} applied, none pending"  # zebra's one counted
    # a pending zebra migration is seen as pending (the check reads zebra's folder too)
    (root / "zebra" / "0002_more.sql").write_text("-- more\n-- depends: 0001_zebra_events\n\n"
                                                  "SET LOCAL search_path = zebra, public;\n"
                                                  "CREATE TABLE more (id int);\n")
    (root / "zebra" / "0002_more.rollback.sql").write_text(
        "SET LOCAL search_path = zebra, public;\nDROP TABLE more;\n")
    pending = {c["name"]: c for c in json.loads(cli("health", "--format", "json", env=env).stdout)["checks"]}
    assert "zebra/0002_more" in pending["migrations"]["value"], pending["migrations"]


BROKEN = [
    ("schema", ZEBRA_TOML.replace('schema = "zebra"\n', ""), "zebra/module.toml: schema is missing"),
    ("action", ZEBRA_TOML.replace('action = "delete"', 'action = "purge"'),
     "zebra/module.toml: retention[0].action 'purge' is not one of archive, delete"),
    ("depends", ZEBRA_TOML.replace('depends = ["minno"]', 'depends = ["minno", "nosuch"]'),
     "zebra/module.toml: depends names 'nosuch', which is no module of this migration set"),
    ("toml", ZEBRA_TOML + "[[retention\n", "zebra/module.toml: not valid TOML"),
    ("sql", ZEBRA_TOML.replace('name = "zebra-events"', 'name = "zebra-other"'),
     "has no SQL file retention/zebra-other.sql"),
]


@pytest.mark.parametrize("case, toml, phrase", BROKEN, ids=[b[0] for b in BROKEN])
@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_a_bad_module_toml_is_one_line_and_exit_3(run_minnoctl, database, tmp_path, case, toml, phrase):
    root = zebra_set(tmp_path, toml)
    env = {"MINNO_DATABASE_URL": database, "MINNOCTL_MIGRATIONS_DIR": str(root)}
    for args in (("migrate", "status"), ("db", "init", "--yes"), ("cleanup", "--list")):
        result = run_minnoctl(*args, env=env)
        assert result.returncode == ExitCode.CONFIG == 3, (args, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and phrase in lines[0], (args, result.stderr)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT to_regclass('minnoctl.migrations')").fetchone()[0] is None  # nothing changed


def test_order_places_known_modules_and_the_others_follow_by_dependency_then_name(tmp_path):
    root = zebra_set(tmp_path)
    aardvark = root / "aardvark"
    aardvark.mkdir()
    (aardvark / "module.toml").write_text('schema = "aardvark"\ndescription = "x"\nsource = "none"\n'
                                          'depends = ["zebra"]\n')
    (root / "yak").mkdir()
    (root / "yak" / "module.toml").write_text('schema = "yak"\ndescription = "y"\nsource = "none"\n')
    (root / "notamodule").mkdir()  # a folder without module.toml is no module
    names = [m.name for m in modules.read(root).modules]
    assert names == [*modules.ORDER, "yak", "zebra", "aardvark"]
    (root / "yak" / "module.toml").write_text('schema = "yak"\ndescription = "y"\nsource = "none"\n'
                                              'depends = ["aardvark"]\n')
    (root / "zebra" / "module.toml").write_text(ZEBRA_TOML.replace('["minno"]', '["yak"]'))
    with pytest.raises(ConfigError, match="depends forms a cycle among aardvark, yak, zebra"):
        modules.read(root)


def test_the_registry_is_read_from_the_migration_root_in_use(tmp_path, monkeypatch):
    """The registry and the migrations come from the same set: MINNOCTL_MIGRATIONS_DIR's."""
    from minnoctl import migrate

    monkeypatch.setenv("MINNOCTL_MIGRATIONS_DIR", str(zebra_set(tmp_path)))
    assert modules.MODULES[-1].name == "zebra" and modules.get("zebra").schema == "zebra"
    assert "zebra-events" in modules.TASKS
    assert any(f.id == "zebra/0001_zebra_events" for f in migrate.load_set())
    monkeypatch.delenv("MINNOCTL_MIGRATIONS_DIR")
    assert "zebra" not in modules.BY_NAME


def test_the_wheel_and_the_installed_package_carry_every_module_folder(tmp_path):
    out = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("minnoctl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"minnoctl/migrations/{p.relative_to(MIGRATIONS).as_posix()}"
               for pattern in ("*/module.toml", "*/retention/*.sql", "*/seed/*.json") for p in MIGRATIONS.glob(pattern)}
    assert len(shipped) >= 6 + 9 + 6 and shipped <= names, sorted(shipped - names)

    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("from minnoctl import modules, seed; r = modules.registry(); print(r.root); "
            "print(','.join(m.name for m in r.modules)); print(len(r.tasks), all(t.sql for _, t in r.tasks.values())); "
            "print(seed.scenarios()); print(len(seed.read_file(modules.get('chatbot')).tables['conversations']) > 0)")
    env = {k: v for k, v in os.environ.items() if k != "MINNOCTL_MIGRATIONS_DIR"} | {"PYTHONPATH": str(target)}
    shown = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    root, names_line, tasks_line, scenarios, has_rows = shown.stdout.splitlines()
    assert root.startswith(str(target))
    assert names_line == ",".join(modules.ORDER)
    assert tasks_line == f"{len(modules.TASKS)} True"
    assert scenarios == "['overdue']" and has_rows == "True"
