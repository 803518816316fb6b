"""Issue 17, first run (items 1 part, 3, 4, 5): where `migrate new` writes and where migrate reads,
a repeatable `db init`, `migrate --help`'s defaults, one line per migration, the next step after
`db init`, and backup's restore commands without CREATEDB. Real servers, real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parent.parent
PG15_MODULES = "minno,chatbot,assistant,supervisor,slackbot"


def _checkout(root: Path) -> Path:
    """A project checkout: pyproject.toml naming minnoctl and a copy of the migration set."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "minnoctl"\nversion = "0.1.0"\n')
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _written_into_repo(slug: str) -> list[Path]:
    return list((REPO / "migrations").glob(f"*/*{slug}*.sql"))


def _fresh_db(admin_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


# -- item 3: migrate new writes into the project, migrate applies it from there ----------------------


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_migrate_new_writes_into_the_checkout_it_is_run_in_and_migrate_applies_it(migrated, run_minnoctl,
                                                                                  tmp_path, monkeypatch):
    project = _checkout(tmp_path / "project")
    (project / "src").mkdir()
    monkeypatch.chdir(project / "src")  # found upward from the current directory
    slug = f"h3_probe_{uuid.uuid4().hex[:6]}"
    env = {"MINNO_DATABASE_URL": migrated}
    try:
        made = run_minnoctl("migrate", "new", slug, "--module", "chatbot", env=env)
        assert made.returncode == 0, made.stderr
        forward, back = (Path(line) for line in made.stdout.split())
        assert forward.parent == project / "migrations" / "chatbot" and back.is_file()
        assert not _written_into_repo(slug)
        forward.write_text(forward.read_text() + "CREATE TABLE h3_probe (id int);\n")
        back.write_text(back.read_text() + "DROP TABLE h3_probe;\n")
        plan = run_minnoctl("migrate", "--dry-run", "--format", "json", env=env)
        assert plan.returncode == 0, plan.stderr
        assert [p["id"] for p in json.loads(plan.stdout)["pending"]] == [f"chatbot/{forward.stem}"]
        applied = run_minnoctl("migrate", env=env)
        assert applied.returncode == 0, applied.stderr
        with psycopg.connect(migrated) as conn:
            assert conn.execute("SELECT to_regclass('chatbot.h3_probe')").fetchone()[0] is not None
    finally:
        for path in _written_into_repo(slug):  # the code before the fix wrote into the package's folder
            path.unlink()


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_migrate_new_and_migrate_use_MINNOCTL_MIGRATIONS_DIR(run_minnoctl, tmp_path, database, monkeypatch):
    copy = _checkout(tmp_path / "elsewhere") / "migrations"
    project = _checkout(tmp_path / "project")  # the variable wins over the checkout it is run in
    monkeypatch.chdir(project)
    env = {"MINNOCTL_MIGRATIONS_DIR": str(copy), "MINNO_DATABASE_URL": database}
    made = run_minnoctl("migrate", "new", "add probe", "--module", "minno", env=env)
    assert made.returncode == 0, made.stderr
    forward = Path(made.stdout.split()[0])
    assert forward.parent == copy / "minno"
    plan = run_minnoctl("db", "init", "--modules", "minno", "--format", "json", env=env)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)[-1]["id"] == f"minno/{forward.stem}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A real non-editable install of the repository, in a site-packages folder."""
    site = tmp_path_factory.mktemp("inst") / "lib" / "python3" / "site-packages"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                             "--target", str(site), str(REPO)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return site


def test_migrate_new_refuses_to_write_into_an_installed_package(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MINNOCTL_MIGRATIONS_DIR"} | {"PYTHONPATH": str(installed)}

    def run(*args: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "minnoctl", *args], cwd=cwd, env=env | extra,
                              capture_output=True, text=True, timeout=120)

    before = sorted(p.name for p in (installed / "minnoctl" / "migrations" / "chatbot").glob("*.sql"))
    refused = run("migrate", "new", "add_index", "--module", "chatbot", cwd=elsewhere)
    assert refused.returncode == 3, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert "MINNOCTL_MIGRATIONS_DIR" in lines[0] and "checkout" in lines[0] and "site-packages" in lines[0]
    assert sorted(p.name for p in (installed / "minnoctl" / "migrations" / "chatbot").glob("*.sql")) == before
    # the same install in a checkout writes into the checkout; with the variable, into that folder
    project = _checkout(tmp_path / "project")
    in_checkout = run("migrate", "new", "add_index", "--module", "chatbot", cwd=project)
    assert in_checkout.returncode == 0, in_checkout.stderr
    assert Path(in_checkout.stdout.split()[0]).parent == project / "migrations" / "chatbot"
    copy = _checkout(tmp_path / "copy") / "migrations"
    with_variable = run("migrate", "new", "add_index", "--module", "chatbot", cwd=elsewhere,
                        MINNOCTL_MIGRATIONS_DIR=str(copy))
    assert with_variable.returncode == 0, with_variable.stderr
    assert Path(with_variable.stdout.split()[0]).parent == copy / "chatbot"
    assert sorted(p.name for p in (installed / "minnoctl" / "migrations" / "chatbot").glob("*.sql")) == before


# -- item 4: db init repeatable, --help's defaults, one line per migration, the next step -------------


def test_plain_db_init_again_on_a_server_without_pgvector_has_nothing_to_do(pg15_novector, run_minnoctl):
    pg15 = pg15_novector
    db = _fresh_db(pg15.url("postgres"))
    env = {"MINNO_DATABASE_URL": pg15.url(db)}
    first = run_minnoctl("db", "init", "--modules", PG15_MODULES, env=env)
    assert first.returncode == 0, first.stderr
    again = run_minnoctl("db", "init", env=env)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stderr and "knowledge" in again.stderr and "vector" in again.stderr
    assert again.stdout == ""
    as_json = run_minnoctl("db", "init", "--format", "json", "--quiet", env=env)
    assert as_json.returncode == 0 and as_json.stderr == "", as_json.stderr
    # asked for by name, knowledge is still refused with exit 12, nothing changed
    asked = run_minnoctl("db", "init", "--modules", "knowledge", env=env)
    assert asked.returncode == 12 and "vector" in asked.stderr


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_db_init_prints_each_migration_once_then_the_next_step(database, run_minnoctl):
    env = {"MINNO_DATABASE_URL": database, "COLUMNS": "200"}
    # JSON stays JSON; --quiet drops the note
    quiet = run_minnoctl("db", "init", "--modules", "minno", "--format", "json", "--quiet", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)[0]["id"] == "minno/0001_core"
    assert "next:" not in quiet.stderr
    result = run_minnoctl("db", "init", "--modules", "minno,chatbot", env=env)
    assert result.returncode == 0, result.stderr
    for mid in ("chatbot/0001_conversations", "chatbot/0004_cleanup_indexes"):
        assert (result.stdout + result.stderr).count(mid) == 1, (result.stdout, result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("minnoctl: next: minnoctl seed") and "minnoctl app create" in last, last


def test_migrate_help_states_the_real_defaults(run_minnoctl):
    shown = run_minnoctl("migrate", "--help", env={"COLUMNS": "300"})
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "Default: all." not in text
    assert "Default: the installed modules (all of them on a new database)" in text
    assert "naming the blocking session. Default: 5s." in text and "[default: 5.0]" not in text
    init = " ".join(run_minnoctl("db", "init", "--help", env={"COLUMNS": "300"}).stdout.split())
    assert "Default: 5s." in init and "[default: 5.0]" not in init


# -- item 5: restore commands without CREATEDB ----------------------------------------------------------


@pytest.fixture
def no_createdb(any_server, tmp_path):
    """A backup of a small database (made by the superuser) and a URL of a login role without
    CREATEDB to that database."""
    role = f"h3_{uuid.uuid4().hex[:8]}"
    db = _fresh_db(any_server.admin_url)
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB NOSUPERUSER PASSWORD 'pw-{role}'")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(any_server.url(db)) | {"user": role}
    if any_server.name == "pg15":
        params["password"] = f"pw-{role}"
    backups = tmp_path / "backups"
    backups.mkdir()
    env = {"MINNO_BACKUP_DIR": str(backups)}
    made = subprocess.run([sys.executable, "-m", "minnoctl", "backup", "create"],
                          env=os.environ | env | {"MINNO_DATABASE_URL": any_server.url(db)},
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    (dump,) = [p for p in backups.iterdir() if not p.name.endswith(".json")]
    yield role, dump, env | {"MINNO_DATABASE_URL": make_conninfo("", **params)}
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_restore_commands_without_createdb_name_the_privilege_and_the_role(no_createdb, run_minnoctl):
    role, dump, env = no_createdb
    for args in (("backup", "verify", str(dump), "--restore-test"),
                 ("backup", "restore", str(dump), "--into", "h3_restored")):
        result = run_minnoctl(*args, env=env)
        assert result.returncode == 1, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        line = lines[0]
        assert "CREATEDB" in line and f"role '{role}'" in line and f"ALTER ROLE {role} CREATEDB" in line, line
        assert "owns minnoctl's schemas" not in line and f"pw-{role}" not in line
        assert "managed PostgreSQL" in line
