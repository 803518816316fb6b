"""Issue 20 item 2: every command on a real three-node Citus cluster laid out by `db init` — seed and
seed --scale spread rows over the workers, cleanup removes exactly what it removes on plain PostgreSQL
(the same rows copied into a plain PostgreSQL 15 database, the same instant), a task the cluster cannot
run is one line while the others run, token rotate / verify, and ports.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from minnoctl import cleanup, crypto, modules

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def laid_out(run_minnoctl, citus_db, kek):
    env = {"MINNO_DATABASE_URL": citus_db, "MINNO_MASTER_KEY": crypto.encode_key(kek.key)}
    result = run_minnoctl("db", "init", env=env)
    assert result.returncode == 0, result.stderr
    assert "laid the schema out" in result.stderr
    return citus_db, env


def _seeded(run_minnoctl, env) -> None:
    first = run_minnoctl("seed", "--scenario", "overdue", "--yes", env=env)
    assert first.returncode == 0, first.stderr
    scaled = run_minnoctl("seed", "--scale", "6000", "--random-seed", "11", "--yes", env=env)
    assert scaled.returncode == 0, scaled.stderr


def test_seed_and_seed_scale_spread_rows_over_the_workers(run_minnoctl, laid_out):
    url, env = laid_out
    _seeded(run_minnoctl, env)
    with psycopg.connect(url) as conn:
        for table in ("chatbot.messages", "minno.conversation_messages", "slackbot.audit_logs",
                      "slackbot.query_history", "knowledge.knowledge_chunks"):
            per_node = dict(conn.execute(
                "SELECT p.nodeport, sum(r.result::bigint) FROM run_command_on_placements(%s, "
                "$$SELECT count(*) FROM %%s$$) r JOIN pg_dist_placement pl USING (shardid) "
                "JOIN pg_dist_node p ON p.groupid = pl.groupid GROUP BY p.nodeport", (table,)).fetchall())
            assert len(per_node) == 2 and all(n > 0 for n in per_node.values()), (table, per_node)
            total = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert sum(per_node.values()) == total
    # seeding again replaces the data (TRUNCATE of reference and distributed tables in one transaction)
    again = run_minnoctl("seed", "--yes", env=env)
    assert again.returncode == 0, again.stderr


def _copy_rows(source: str, dest: str) -> None:
    """Every module table's rows from `source` into the same tables of `dest` (triggers and foreign
    keys off while copying: the rows are a consistent copy)."""
    schemas = [m.schema for m in modules.MODULES]
    with psycopg.connect(source) as src, psycopg.connect(dest) as dst:
        tables = [r[0] for r in src.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ANY(%s) AND c.relkind = 'r'", (schemas,))]
        dst.execute("SET session_replication_role = replica")
        dst.execute(f"TRUNCATE {', '.join(tables)}")
        for table in tables:
            columns = [r[0] for r in src.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                "AND attgenerated = '' ORDER BY attnum", (table,))]
            cols = ", ".join(f'"{c}"' for c in columns)
            with src.cursor().copy(f"COPY (SELECT {cols} FROM {table}) TO STDOUT (FORMAT binary)") as out, \
                    dst.cursor().copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT binary)") as into:
                for block in out:
                    into.write(block)
        dst.commit()


def _run_cleanup(url: str, now: dt.datetime) -> dict[str, tuple[str, int, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        plans = cleanup.plan(conn, only=[], skip=[], ages={})
        result = cleanup.run(conn, plans, now=now, batch_size=200)
    return {t.task: (t.status, t.rows, t.archived) for t in result.tasks}


def test_cleanup_removes_exactly_what_it_removes_on_plain_postgresql(run_minnoctl, laid_out, pg15):
    url, env = laid_out
    _seeded(run_minnoctl, env)
    plain = pg15.url(f"plain_{uuid.uuid4().hex[:8]}")
    assert run_minnoctl("db", "init", env={"MINNO_DATABASE_URL": plain}).returncode == 0
    _copy_rows(url, plain)
    now = dt.datetime.now(dt.UTC)
    on_cluster, on_plain = _run_cleanup(url, now), _run_cleanup(plain, now)
    assert on_cluster == on_plain
    assert sum(rows for _, rows, _ in on_cluster.values()) > 500  # real work on both
    assert on_cluster["chatbot-conversations"][2] > on_cluster["chatbot-conversations"][1]  # messages archived too
    with psycopg.connect(url) as c, psycopg.connect(plain) as p:
        for table, key in (("chatbot.conversations", "id"), ("chatbot.messages", "id"),
                           ("chatbot.messages_archive", "id"), ("chatbot.conversations_archive", "id"),
                           ("slackbot.audit_logs", "id"), ("slackbot.audit_logs_archive", "id"),
                           ("slackbot.user_sessions", "id || is_active::text"), ("assistant.sessions", "session_id"),
                           ("assistant.confirmations", "id || status")):
            q = f"SELECT count(*), md5(string_agg(({key})::text, ',' ORDER BY ({key})::text)) FROM {table}"
            assert c.execute(q).fetchone() == p.execute(q).fetchone(), table
    # the next run finds nothing left, on both
    again = _run_cleanup(url, now)
    assert all(status == "nothing" for status, _, _ in again.values()), again


def test_a_task_the_cluster_cannot_run_is_one_line_and_the_others_run(run_minnoctl, laid_out, tmp_path):
    url, env = laid_out
    _seeded(run_minnoctl, env)
    root = tmp_path / "set"
    shutil.copytree(REPO / "migrations", root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "chatbot" / "retention" / "chatbot-conversations.citus.sql").unlink()
    result = run_minnoctl("cleanup", "--format", "json", env=env | {"MINNOCTL_MIGRATIONS_DIR": str(root)})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    warned = [ln for ln in result.stderr.splitlines() if "chatbot-conversations" in ln]
    assert len(warned) == 1 and "citus.sql" in warned[0], result.stderr
    import json

    doc = json.loads(result.stdout)
    by = {t["task"]: t for t in doc["tasks"]}
    assert doc["status"] == "failed" and by["chatbot-conversations"]["status"] == "failed"
    assert by["slackbot-audit-logs"]["status"] == "ok" and by["slackbot-audit-logs"]["rows"] > 0
    with psycopg.connect(url) as conn:  # nothing of the failed task happened
        assert conn.execute("SELECT count(*) FROM chatbot.conversations_archive").fetchone()[0] == 0


def test_token_rotate_and_verify_on_the_cluster(run_minnoctl, laid_out):
    url, env = laid_out
    _seeded(run_minnoctl, env)
    before = run_minnoctl("token", "verify", env=env)
    assert before.returncode == 0, before.stderr
    rotated = run_minnoctl("token", "rotate", env=env)
    assert rotated.returncode == 0, rotated.stderr
    assert "rotation done" in rotated.stderr
    after = run_minnoctl("token", "verify", env=env)
    assert after.returncode == 0 and "decrypt" in after.stderr, after.stderr
    with psycopg.connect(url) as conn:
        statuses = dict(conn.execute("SELECT key_number, status FROM minno.encryption_keys").fetchall())
    assert sorted(statuses.values()) == ["active", "retired"], statuses


def test_ports_on_the_cluster(run_minnoctl, laid_out):
    url, env = laid_out
    assert run_minnoctl("seed", "--yes", env=env).returncode == 0
    first = run_minnoctl("ports", "allocate", "--project", "odin", "--service", "api", "--service-type", "metrics",
                         "--format", "plain", env=env)
    assert first.returncode == 0, first.stderr
    second = run_minnoctl("ports", "allocate", "--project", "odin", "--service", "web", "--service-type", "metrics",
                          "--format", "plain", env=env)
    assert second.returncode == 0, second.stderr
    assert first.stdout.strip() != second.stdout.strip()
    released = run_minnoctl("ports", "release", "--project", "odin", "--service", "api", env=env)
    assert released.returncode == 0, released.stderr
    listed = run_minnoctl("ports", "list", "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
