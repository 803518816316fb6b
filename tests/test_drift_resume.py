"""The live-schema baseline is recorded once per module per run (at that run's last migration of the
module, in its transaction), not after every migration: a run stopped part-way leaves the baseline
of an earlier migration, and the next run must take the live schema as the reference again instead
of refusing as drift what its own migrations built."""

from __future__ import annotations

import json
import shutil

import psycopg

from minnoctl.errors import ExitCode
from test_migrate import REPO_MIGRATIONS


def env(url: str, folder=None) -> dict[str, str]:
    return {"MINNO_DATABASE_URL": url} | ({"MINNOCTL_MIGRATIONS_DIR": str(folder)} if folder else {})


def baselines(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT module, migration_id FROM minnoctl.schema_baseline").fetchall())


def test_a_run_records_each_modules_baseline_at_its_last_migration(cli, database):
    assert cli("db", "init", "--modules", "chatbot", env=env(database)).exit_code == 0
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT module, migration_id FROM minnoctl.schema_baseline ORDER BY 1").fetchall()
    assert rows == [("chatbot", "chatbot/0004_cleanup_indexes"), ("minno", "minno/0007_refuse_plaintext_fields")]


def _partial_set(tmp_path, name: str, keep: int):
    """The migration set with minno's migrations after number `keep` left out."""
    folder = tmp_path / name
    shutil.copytree(REPO_MIGRATIONS, folder)
    for path in (folder / "minno").glob("*.sql"):
        if int(path.name[:4]) > keep:
            path.unlink()
    return folder


def test_a_run_stopped_between_two_migrations_of_a_module_is_not_drift(cli, database, any_server, tmp_path):
    """minno/0005 adds a column and replaces the guard function; a run that applied it and died
    before the module's last migration left the baseline of 0004."""
    import uuid

    other = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{other}"')
    try:
        url4 = any_server.url(other)
        assert cli("db", "init", "--modules", "minno", env=env(url4, _partial_set(tmp_path, "s4", 4))).exit_code == 0
        with psycopg.connect(url4) as conn:
            stale = conn.execute(
                "SELECT fingerprint FROM minnoctl.schema_baseline WHERE module = 'minno'").fetchone()[0]
    finally:
        with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')
    assert cli("db", "init", "--modules", "minno", env=env(database, _partial_set(tmp_path, "s5", 5))).exit_code == 0
    with psycopg.connect(database, autocommit=True) as conn:  # the state that run left: 0005 applied, 0004's baseline
        conn.execute("UPDATE minnoctl.schema_baseline SET migration_id = 'minno/0004_field_key_guard', "
                     "fingerprint = %s WHERE module = 'minno'", (psycopg.types.json.Jsonb(stale),))
    resumed = cli("migrate", env=env(database))
    assert resumed.exit_code == 0, resumed.stderr
    assert "minno/0006_key_row_share_lock" in resumed.stdout
    verify = cli("migrate", "verify", "--format", "json", env=env(database))
    assert verify.exit_code == 0 and json.loads(verify.stdout) == [], verify.stdout + verify.stderr
    assert baselines(database)["minno"] == "minno/0007_refuse_plaintext_fields"
    with psycopg.connect(database, autocommit=True) as conn:  # and real damage is still seen afterwards
        conn.execute("DROP INDEX minno.idx_oauth_tokens_provider")
    assert cli("migrate", "verify", env=env(database)).exit_code == ExitCode.DRIFT
