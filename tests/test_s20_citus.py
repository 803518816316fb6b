"""Issue 20 item 1: `db init` on a Citus coordinator lays the schema out by each module's distribution
plan (migrations/<module>/distribution.toml), on a real three-node cluster (coordinator + two workers
of PostgreSQL 15 with Citus 13, started by the `citus` fixture). On plain PostgreSQL nothing changes;
migrations after the layout run on the cluster and the tables they create follow the plans.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import psycopg
import pytest

from minnoctl import distribution, modules
from minnoctl.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = REPO / "migrations"


def layout(url: str) -> dict[str, dict]:
    with psycopg.connect(url) as conn:
        return distribution.layout(conn, [m.schema for m in modules.MODULES])


def module_tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ANY(%s) AND c.relkind = 'r'", ([m.schema for m in modules.MODULES],))}


def plans() -> dict[str, dict]:
    return {m.name: tomllib.loads((MIGRATIONS / m.name / "distribution.toml").read_text()) for m in modules.MODULES}


def test_db_init_lays_every_table_out_by_the_plans(run_minnoctl, citus_db):
    result = run_minnoctl("db", "init", "--verbose", env={"MINNO_DATABASE_URL": citus_db})
    assert result.returncode == 0, result.stderr
    assert "laid the schema out on the Citus cluster (2 node(s) holding shards)" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    now = layout(citus_db)
    # every table of every module is laid out as its plan says: a local one stays a plain table unless a
    # foreign key to a reference table makes Citus manage it
    assert set(now) <= module_tables(citus_db)
    for name, plan in plans().items():
        schema = modules.get(name).schema
        for table in plan.get("reference", []):
            assert now[f"{schema}.{table}"]["kind"] == "reference", table
        for table in plan.get("local", []):
            assert now.get(f"{schema}.{table}", {"kind": "local"})["kind"] == "local", table
        groups: dict[str, int] = {}
        for d in plan.get("distributed", []):
            got = now[f"{schema}.{d['table']}"]
            assert got["kind"] == "distributed" and got["column"] == d["column"], (d, got)
            head = d.get("colocate_with", d["table"])
            assert groups.setdefault(head, got["colocation"]) == got["colocation"], d
    # the tenant groups are apart from each other (colocate_with none for each group's first table)
    heads = {now[t]["colocation"] for t in ("chatbot.conversations", "minno.conversation_messages",
                                            "slackbot.user_sessions", "slackbot.audit_logs",
                                            "knowledge.knowledge_sources")}
    assert len(heads) == 5
    with psycopg.connect(citus_db) as conn:
        # the keys distribution needs, under the spec's own constraint names
        pk = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'messages_pkey' "
                          "AND conrelid = 'chatbot.messages'::regclass").fetchone()[0]
        assert pk == "PRIMARY KEY (id, conversation_id)"
        fk = conn.execute("SELECT count(*) FROM pg_constraint WHERE conname = 'messages_conversation_id_fkey'"
                          ).fetchone()[0]
        assert fk == 1  # set aside for the layout and made again
        # shards are on both workers
        nodes = conn.execute("SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name = "
                             "'chatbot.messages'::regclass").fetchone()[0]
        assert nodes == 2
    # the layout is the schema's baseline now: no drift, health's schema check is OK
    verify = run_minnoctl("migrate", "verify", env={"MINNO_DATABASE_URL": citus_db})
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # a second db init has nothing to do
    again = run_minnoctl("db", "init", env={"MINNO_DATABASE_URL": citus_db})
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr


def test_rows_go_to_the_workers_and_the_documents_queries_run(run_minnoctl, citus_db):
    assert run_minnoctl("db", "init", "--modules", "minno,chatbot,slackbot",
                        env={"MINNO_DATABASE_URL": citus_db}).returncode == 0
    with psycopg.connect(citus_db, autocommit=True) as conn:
        # spec 001's own statements: a conversation, its messages, the updated_at trigger on a shard
        for i in range(40):
            cid = conn.execute("INSERT INTO chatbot.conversations (user_id) VALUES (%s) RETURNING id",
                               (f"u{i}",)).fetchone()[0]
            conn.execute("INSERT INTO chatbot.messages (conversation_id, role, content) VALUES (%s, 'user', 'hi')",
                         (cid,))
        before = conn.execute("SELECT updated_at FROM chatbot.conversations WHERE id = %s", (cid,)).fetchone()[0]
        conn.execute("UPDATE chatbot.conversations SET metadata = '{\"a\": 1}' WHERE id = %s", (cid,))
        after = conn.execute("SELECT updated_at FROM chatbot.conversations WHERE id = %s", (cid,)).fetchone()[0]
        assert after > before  # the trigger ran on the worker's shard
        rows = conn.execute(
            "SELECT c.id, count(m.id) FROM chatbot.conversations c LEFT JOIN chatbot.messages m "
            "ON m.conversation_id = c.id GROUP BY c.id").fetchall()
        assert len(rows) == 40 and all(n == 1 for _, n in rows)
        # the cascade of the co-located foreign key
        conn.execute("DELETE FROM chatbot.conversations WHERE id = %s", (cid,))
        assert conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0] == 39
        per_node = conn.execute(
            "SELECT nodeport, sum(shard_size) FROM citus_shards WHERE table_name = 'chatbot.messages'::regclass "
            "GROUP BY nodeport").fetchall()
        assert len(per_node) == 2
        # spec 000: a workspace (reference), a session (reference, one per thread), its messages (distributed)
        ws = conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T1', 'Team') "
                          "RETURNING id").fetchone()[0]
        sid = conn.execute("INSERT INTO minno.minno_sessions (workspace_id, slack_channel_id, slack_thread_ts) "
                           "VALUES (%s, 'C1', '1.1') RETURNING id", (ws,)).fetchone()[0]
        with pytest.raises(psycopg.errors.UniqueViolation):  # one session per Slack thread still holds
            conn.execute("INSERT INTO minno.minno_sessions (workspace_id, slack_channel_id, slack_thread_ts) "
                         "VALUES (%s, 'C1', '1.1')", (ws,))
        conn.execute("INSERT INTO minno.conversation_messages (session_id, role, content) VALUES (%s, 'user', 'x')",
                     (sid,))
        got = conn.execute("SELECT count(*) FROM minno.conversation_messages WHERE session_id = %s ORDER BY 1",
                           (sid,)).fetchone()[0]
        assert got == 1
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO minno.conversation_messages (session_id, role, content) "
                         "VALUES (gen_random_uuid(), 'user', 'x')")
        conn.execute("DELETE FROM minno.workspaces WHERE id = %s", (ws,))  # cascades to sessions and messages
        assert conn.execute("SELECT count(*) FROM minno.conversation_messages").fetchone()[0] == 0
        # spec 004's view and function over the distributed audit log
        conn.execute("INSERT INTO slackbot.audit_logs (event_type, event_category, event_description) "
                     "VALUES ('login', 'auth', 'x')")
        assert conn.execute("SELECT count(*) FROM slackbot.audit_logs").fetchone()[0] == 1


def test_plain_postgresql_is_unchanged_and_distributed_refused_there(run_minnoctl, pg15):
    import uuid

    name = f"plain_{uuid.uuid4().hex[:8]}"
    url = pg15.url(name)
    refused = run_minnoctl("db", "init", "--distributed", "--modules", "minno", env={"MINNO_DATABASE_URL": url})
    assert refused.returncode == ExitCode.EXTENSION, refused.stderr
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--distributed" in lines[0] and "citus extension" in lines[0], lines
    assert "nothing was changed" in lines[0]
    ok = run_minnoctl("db", "init", "--modules", "minno,chatbot", env={"MINNO_DATABASE_URL": url})
    assert ok.returncode == 0 and "Citus" not in ok.stderr, ok.stderr
    with psycopg.connect(url) as conn:
        pk = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'messages_pkey'"
                          ).fetchone()[0]
    assert pk == "PRIMARY KEY (id)"


def test_no_distributed_leaves_the_tables_on_the_coordinator_and_a_later_db_init_distributes(
        run_minnoctl, citus_db):
    env = {"MINNO_DATABASE_URL": citus_db}
    plain = run_minnoctl("db", "init", "--no-distributed", "--modules", "minno,chatbot", env=env)
    assert plain.returncode == 0, plain.stderr
    assert not layout(citus_db)
    with psycopg.connect(citus_db, autocommit=True) as conn:
        cid = conn.execute("INSERT INTO chatbot.conversations (user_id) VALUES ('u') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO chatbot.messages (conversation_id, role, content) VALUES (%s, 'user', 'x')", (cid,))
    # migrate on a database left on the coordinator keeps it there
    assert run_minnoctl("migrate", env=env).returncode == 0
    assert not layout(citus_db)
    # the one command that distributes an existing database: its rows move to the workers
    moved = run_minnoctl("db", "init", "--distributed", env=env)
    assert moved.returncode == 0, moved.stderr
    assert "laid the schema out" in moved.stderr
    now = layout(citus_db)
    assert now["chatbot.messages"]["kind"] == "distributed"
    with psycopg.connect(citus_db) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0] == 1
    assert run_minnoctl("migrate", "verify", env=env).returncode == 0


def _set_with_a_new_chatbot_migration(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    shutil.copytree(MIGRATIONS, root, ignore=shutil.ignore_patterns("__pycache__"))
    last = sorted(p.stem for p in (root / "chatbot").glob("[0-9]*.sql") if not p.name.endswith(".rollback.sql"))[-1]
    (root / "chatbot" / "0099_reactions.sql").write_text(
        f"-- depends: {last}\n"
        "SET LOCAL search_path = chatbot, public;\n"
        "ALTER TABLE messages ADD COLUMN edited_at TIMESTAMP;\n"
        "CREATE TABLE reactions (id UUID NOT NULL DEFAULT gen_random_uuid(), conversation_id UUID NOT NULL\n"
        "  REFERENCES conversations (id) ON DELETE CASCADE, emoji TEXT NOT NULL, PRIMARY KEY (id, conversation_id));\n")
    (root / "chatbot" / "0099_reactions.rollback.sql").write_text(
        "DROP TABLE chatbot.reactions;\nALTER TABLE chatbot.messages DROP COLUMN edited_at;\n")
    plan = (root / "chatbot" / "distribution.toml").read_text()
    (root / "chatbot" / "distribution.toml").write_text(
        plan + '\n[[distributed]]\ntable = "reactions"\ncolumn = "conversation_id"\ncolocate_with = "conversations"\n')
    return root


def test_a_later_migration_runs_on_the_cluster_and_its_table_follows_the_plan(run_minnoctl, citus_db, tmp_path):
    env = {"MINNO_DATABASE_URL": citus_db}
    assert run_minnoctl("db", "init", "--modules", "minno,chatbot", env=env).returncode == 0
    env["MINNOCTL_MIGRATIONS_DIR"] = str(_set_with_a_new_chatbot_migration(tmp_path))
    result = run_minnoctl("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert "0099_reactions" in result.stdout
    now = layout(citus_db)
    assert now["chatbot.reactions"]["kind"] == "distributed"
    assert now["chatbot.reactions"]["colocation"] == now["chatbot.conversations"]["colocation"]
    with psycopg.connect(citus_db) as conn:
        # the new column reached every shard of messages (DDL propagated by Citus)
        shards = conn.execute(
            "SELECT result FROM run_command_on_shards('chatbot.messages', $$SELECT count(*) FROM "
            "pg_attribute WHERE attrelid = '%s'::regclass AND attname = 'edited_at'$$)").fetchall()
        assert shards and all(r[0] == "1" for r in shards), shards
    assert run_minnoctl("migrate", "verify", env=env).returncode == 0


def test_a_mistake_in_a_plan_file_is_one_line_before_any_change(run_minnoctl, citus_db, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(MIGRATIONS, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "chatbot" / "distribution.toml").write_text(
        '[[distributed]]\ntable = "messages"\ncolumn = "conversation_id"\ncolocate_with = "conversations"\n')
    env = {"MINNO_DATABASE_URL": citus_db, "MINNOCTL_MIGRATIONS_DIR": str(root)}
    result = run_minnoctl("db", "init", "--modules", "minno,chatbot", env=env)
    assert result.returncode == ExitCode.CONFIG, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "chatbot/distribution.toml" in lines[0] and "colocate_with" in lines[0], lines
    assert not module_tables(citus_db)


def test_every_plan_names_every_table_its_migrations_create(citus_db, run_minnoctl):
    """A table a migration adds must be placed in its module's plan (or it stays on the coordinator
    and db init warns): the shipped plans cover the whole schema."""
    result = run_minnoctl("db", "init", env={"MINNO_DATABASE_URL": citus_db})
    assert result.returncode == 0, result.stderr
    assert "in no distribution plan" not in result.stderr
    for name, plan in plans().items():
        schema = modules.get(name).schema
        named = (set(plan.get("reference", [])) | set(plan.get("local", []))
                 | {d["table"] for d in plan.get("distributed", [])})
        assert {t.split(".", 1)[1] for t in module_tables(citus_db) if t.startswith(schema + ".")} == named, name


def test_the_cluster_rewrites_return_what_the_originals_return(run_minnoctl, pg15, kek):
    """migrations/knowledge/citus/*.sql replace a function and a view on a cluster: on the same data of
    a plain PostgreSQL they give the same rows as the migrations' own definitions."""
    import uuid

    from minnoctl import crypto

    url = pg15.url(f"rw_{uuid.uuid4().hex[:8]}")
    env = {"MINNO_DATABASE_URL": url, "MINNO_MASTER_KEY": crypto.encode_key(kek.key)}
    assert run_minnoctl("db", "init", env=env).returncode == 0
    assert run_minnoctl("seed", "--yes", env=env).returncode == 0
    assert run_minnoctl("seed", "--scale", "3000", "--random-seed", "5", "--modules", "supervisor,knowledge",
                        "--yes", env=env).returncode == 0
    queries = ["SELECT * FROM knowledge.knowledge_coverage_by_project ORDER BY project_id"]
    with psycopg.connect(url) as conn:
        probes = conn.execute("SELECT embedding::text, project_id FROM knowledge.knowledge_chunks "
                              "WHERE embedding IS NOT NULL ORDER BY id LIMIT 3").fetchall()
    assert probes
    for embedding, project in probes:
        for who in (None, project):
            queries.append(("SELECT * FROM knowledge.search_knowledge_chunks(%s::vector, %s, 7, -1)",
                            (embedding, who)))
    with psycopg.connect(url) as conn:
        def run_all() -> list:
            out = []
            for q in queries:
                text, args = (q, None) if isinstance(q, str) else q
                out.append(conn.execute(text, args).fetchall())
            return out

        before = run_all()
        assert any(before[1:]) and before[0]
        for name in ("search_knowledge_chunks", "knowledge_coverage_by_project"):
            conn.execute((MIGRATIONS / "knowledge" / "citus" / f"{name}.sql").read_bytes())
        after = run_all()
        conn.rollback()
    assert after == before
