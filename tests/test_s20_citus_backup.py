"""Issue 20 item 4, backups on a Citus cluster are honest.

A real three-node Citus cluster (the `citus_db` fixture): `backup create` on the coordinator takes a
dump consistent across the nodes (writes wait on SHARE locks for the dump), records the distribution
in the manifest, and `backup restore --clean` into another Citus database recreates it before the data
loads. A new database (--into, --restore-test) on the coordinator holds plain tables, and says so;
so does a plain PostgreSQL destination. A writer that holds its lock past --lock-timeout gets one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from minnoctl.errors import ExitCode
from pgcluster import free_port


def one_error_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("minnoctl: error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def distribute(url: str) -> None:
    """A distributed schema made by hand on tables db init left on the coordinator (--no-distributed):
    a reference table, and two colocated distributed tables with a foreign key between them, with 6
    shards rather than the default 32 (so a restore must carry the shard count)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET citus.enable_unsafe_triggers = on")
        conn.execute("SELECT create_reference_table('minno.workspaces')")
        conn.execute("ALTER TABLE chatbot.messages DROP CONSTRAINT messages_pkey")
        conn.execute("ALTER TABLE chatbot.messages ADD PRIMARY KEY (id, conversation_id)")
        conn.execute("SELECT create_distributed_table('chatbot.conversations', 'id', shard_count => 6)")
        conn.execute("SELECT create_distributed_table('chatbot.messages', 'conversation_id', "
                     "colocate_with => 'chatbot.conversations')")


def distribution(url: str) -> dict[str, tuple]:
    """Each Citus table: (type, distribution column, shard count, the tables colocated with it)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """SELECT logicalrelid::regclass::text, partmethod, repmodel,
                      CASE WHEN partkey IS NULL THEN NULL ELSE column_to_column_name(logicalrelid, partkey) END,
                      colocationid,
                      (SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid)
                 FROM pg_dist_partition p WHERE partmethod <> 'n' OR repmodel = 't'""").fetchall()
    groups: dict[int, list[str]] = {}
    for table, *_rest, colocation, _n in rows:
        groups.setdefault(colocation, []).append(table)
    return {table: (method, rep, column, shards, tuple(sorted(groups[colocation])))
            for table, method, rep, column, colocation, shards in rows}


@pytest.fixture
def cluster_db(cli, citus_db):
    assert cli("db", "init", "--no-distributed", "--modules", "minno,chatbot,slackbot",
               env={"MINNO_DATABASE_URL": citus_db}).exit_code == 0
    distribute(citus_db)
    with psycopg.connect(citus_db, autocommit=True) as conn:
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) "
                     "SELECT 'T' || g, 'team ' || g FROM generate_series(1, 20) g")
        conn.execute("INSERT INTO chatbot.conversations (user_id) SELECT 'u' || g FROM generate_series(1, 20000) g")
        conn.execute("INSERT INTO chatbot.messages (conversation_id, role, content) "
                     "SELECT id, 'user', repeat('x', 200) FROM chatbot.conversations")
    return citus_db


@pytest.fixture
def destination(citus):
    """A second Citus database (every node, workers added) to restore into; dropped after."""
    name = f"dest_{time.monotonic_ns() % 10**10}"
    yield citus.create_database(name)
    citus.drop_database(name)


@pytest.fixture
def backup(cli, cluster_db, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()

    def go(*args: str, url: str = cluster_db):
        return cli("backup", *args, env={"MINNO_DATABASE_URL": url, "MINNO_BACKUP_DIR": str(folder)})
    go.folder = folder
    return go


def created(result) -> Path:
    assert result.exit_code == 0, result.stderr
    return Path(json.loads(result.stdout)["file"])


WRITER = r"""
import signal, sys, psycopg
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    print("ready", flush=True)
    n = 0
    while not stop:
        with conn.transaction():  # two parents on two shards and their children: one 2PC transaction
            ids = [r[0] for r in conn.execute(
                "INSERT INTO chatbot.conversations (user_id) VALUES ('w1'), ('w2') RETURNING id").fetchall()]
            for cid in ids:
                conn.execute("INSERT INTO chatbot.messages (conversation_id, role, content) "
                             "VALUES (%s, 'user', 'a'), (%s, 'assistant', 'b')", (cid, cid))
        n += 1
print(n, flush=True)
"""


def check_consistent(url: str, expected_rows: dict[str, int] | None = None) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        conversations = conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0]
        messages = conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0]
        orphans = conn.execute("SELECT count(*) FROM chatbot.messages m LEFT JOIN chatbot.conversations c "
                               "ON c.id = m.conversation_id WHERE c.id IS NULL").fetchone()[0]
        childless = conn.execute("SELECT count(*) FROM chatbot.conversations c WHERE user_id LIKE 'w_' AND "
                                 "(SELECT count(*) FROM chatbot.messages m WHERE m.conversation_id = c.id) <> 2"
                                 ).fetchone()[0]
        invalid = conn.execute("SELECT conname FROM pg_constraint WHERE contype = 'f' AND NOT convalidated"
                               ).fetchall()
    assert orphans == 0 and childless == 0 and not invalid, (orphans, childless, invalid)
    writes = conversations - 20000
    assert messages == 20000 + 2 * writes, (conversations, messages)
    if expected_rows is not None:
        assert expected_rows["chatbot.conversations"] == conversations
        assert expected_rows["chatbot.messages"] == messages
    return conversations, messages


def test_backup_during_writes_is_consistent_and_restores_distributed(backup, cluster_db, destination, cli):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, cluster_db], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(1)
        result = backup("create", "--output-format", "json")
        time.sleep(0.5)
    finally:
        writer.terminate()
        out, _ = writer.communicate(timeout=30)
    assert int(out.strip()) > 0  # the writer did write, before and after the dump
    path = created(result)
    manifest = json.loads(path.with_name(path.name + ".manifest.json").read_text())
    rows = manifest["rows"]
    assert rows["chatbot.messages"] == 20000 + 2 * (rows["chatbot.conversations"] - 20000)
    assert rows["chatbot.conversations"] > 20000  # taken while the writer wrote
    tables = {t["table"]: t for t in manifest["citus"]["tables"]}
    assert tables["minno.workspaces"]["type"] == "reference"
    assert tables["chatbot.conversations"]["type"] == "distributed"
    assert tables["chatbot.conversations"]["column"] == "id"
    assert tables["chatbot.conversations"]["shard_count"] == 6
    assert tables["chatbot.messages"]["column"] == "conversation_id"
    assert tables["chatbot.messages"]["colocation_id"] == tables["chatbot.conversations"]["colocation_id"]

    # restored over another Citus database: distributed as the source, every FK valid, counts consistent
    restored = cli("backup", "restore", str(path), "--clean", "--yes",
                   env={"MINNO_DATABASE_URL": destination, "MINNO_BACKUP_DIR": str(backup.folder)})
    assert restored.exit_code == 0, restored.stderr
    assert "not recreated" not in restored.stderr
    check_consistent(destination, rows)
    source = distribution(cluster_db)
    assert distribution(destination) == source
    assert source["chatbot.messages"][4] == ("chatbot.conversations", "chatbot.messages")


def test_restore_clean_recreates_distribution_and_verify_is_honest(backup, cluster_db, destination, cli):
    path = created(backup("create", "--output-format", "json"))
    # the same backup restored twice over the destination: the second --clean replaces distributed tables
    for _ in range(2):
        restored = cli("backup", "restore", path.name, "--clean", "--yes",
                       env={"MINNO_DATABASE_URL": destination, "MINNO_BACKUP_DIR": str(backup.folder)})
        assert restored.exit_code == 0, restored.stderr
        assert distribution(destination) == distribution(cluster_db)
        check_consistent(destination)
    with psycopg.connect(destination) as conn:  # the extension was neither dropped nor its nodes lost
        assert conn.execute("SELECT count(*) FROM pg_dist_node WHERE groupid <> 0").fetchone()[0] == 2

    # a new database on the coordinator is no cluster of its own: plain tables, said in one line
    verified = backup("verify", path.name, "--restore-test")
    assert verified.exit_code == 0, verified.stderr
    assert "plain tables" in verified.stderr
    into = backup("restore", path.name, "--into", f"copy_{time.monotonic_ns() % 10**8}")
    assert into.exit_code == 0, into.stderr
    notes = [ln for ln in into.stderr.splitlines() if "distribution was not recreated" in ln]
    assert len(notes) == 1, into.stderr
    name = into.stdout.strip().splitlines()[-1]
    coordinator = conninfo_to_dict(cluster_db)
    with psycopg.connect(**{**coordinator, "dbname": "postgres"}, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_plain_postgresql_destination_says_distribution_not_recreated(backup, pg15, cli):
    path = created(backup("create", "--output-format", "json"))
    name = f"plain_{time.monotonic_ns() % 10**8}"
    restored = cli("backup", "restore", str(path), "--into", name,
                   env={"MINNO_DATABASE_URL": pg15.url("postgres"), "MINNO_BACKUP_DIR": str(backup.folder)})
    try:
        assert restored.exit_code == 0, restored.stderr
        notes = [ln for ln in restored.stderr.splitlines() if "distribution was not recreated" in ln]
        assert len(notes) == 1, restored.stderr
        check_consistent(pg15.url(name))
    finally:
        with psycopg.connect(**pg15.admin_params(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_lock_timeout_is_one_line_and_writes_nothing(backup, cluster_db):
    holder = psycopg.connect(cluster_db)
    try:  # a writer in the middle of its transaction: its lock conflicts with the dump's SHARE lock
        holder.execute("INSERT INTO chatbot.conversations (user_id) VALUES ('held')")
        started = time.monotonic()
        result = backup("create", "--lock-timeout", "1s")
        took = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == ExitCode.LOCK_HELD, result.stderr
    line = one_error_line(result)
    assert "lock" in line and "1s" in line and "nothing was written" in line, line
    assert took < 20
    assert list(backup.folder.iterdir()) == []
    # and nothing stays locked: the next one goes through
    assert backup("create").exit_code == 0


def test_unreachable_worker_refuses(backup, cluster_db):
    with psycopg.connect(cluster_db, autocommit=True) as conn:  # this database's metadata only
        conn.execute("UPDATE pg_dist_node SET nodeport = %s WHERE nodeid = "
                     "(SELECT max(nodeid) FROM pg_dist_node WHERE groupid <> 0)", (free_port(),))
    result = backup("create", "--lock-timeout", "5s")
    line = one_error_line(result)
    assert result.exit_code == ExitCode.UNREACHABLE, line
    assert "consistent" in line and "nothing was written" in line, line
    assert list(backup.folder.iterdir()) == []


def test_locks_reach_every_node_and_block_writes_through_a_worker(cluster_db, citus):
    """What the dump holds: SHARE locks on the coordinator's and every worker's copy of each Citus table
    (Citus propagates LOCK to the nodes' metadata, not to the shard tables), so a write through a
    worker waits too; reads go on."""
    import contextlib

    from minnoctl import backup as backup_logic
    from minnoctl.config import load_settings

    settings = load_settings(env={"MINNO_DATABASE_URL": cluster_db})
    dbname = conninfo_to_dict(cluster_db)["dbname"]
    with contextlib.ExitStack() as held:
        locked = backup_logic._hold_cluster_still(settings, held, 5)
        assert {"chatbot.conversations", "chatbot.messages", "minno.workspaces"} <= locked
        with psycopg.connect(cluster_db, autocommit=True) as conn:
            seen = conn.execute(
                "SELECT result FROM run_command_on_workers($$SELECT string_agg(relation::regclass::text, ',' "
                "ORDER BY 1) FROM pg_locks WHERE locktype = 'relation' AND mode = 'ShareLock' AND granted$$)"
            ).fetchall()
        assert len(seen) == 2
        for (result,) in seen:
            assert {"chatbot.conversations", "chatbot.messages", "minno.workspaces"} <= set(result.split(","))
        with psycopg.connect(citus.worker_url(0, dbname), autocommit=True) as worker:
            assert worker.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0] == 20000  # reads go on
            worker.execute("SET lock_timeout = '500ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                worker.execute("INSERT INTO chatbot.conversations (user_id) VALUES ('through a worker')")
    with psycopg.connect(citus.worker_url(0, dbname), autocommit=True) as worker:  # released
        worker.execute("SET lock_timeout = '5s'")
        worker.execute("INSERT INTO chatbot.conversations (user_id) VALUES ('through a worker')")
