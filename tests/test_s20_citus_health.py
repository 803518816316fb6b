"""Issue 20 item 3: `minnoctl health` on a Citus coordinator sees the cluster, not the coordinator's
empty shell tables: the nodes reaching each other (citus_check_cluster_node_health), the shards and
bytes per worker, the tables' sizes summed over the workers, the dead rows and stale statistics of
the shards, and every check that still looks at the coordinator alone saying so.

A real three-node cluster (the `citus` fixture: coordinator and two workers on PostgreSQL 15), a
database of its own per test (`citus_db`), the modules' tables distributed by hand as the lead's
distribution plan will: minno.workspaces a reference table, chatbot.conversations and
chatbot.messages distributed and colocated by conversation.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlparse

import psycopg
import pytest

from minnoctl.health import human_size
from pgcluster import DEBIAN_PG15, Cluster, free_port

MESSAGES = 20_000


def health(cli, url: str, *args: str) -> tuple[int, dict]:
    result = cli("health", "--format", "json", *args, env={"MINNO_DATABASE_URL": url})
    assert "Traceback" not in result.stderr, result.stderr
    doc = json.loads(result.stdout)
    return result.exit_code, {c["name"]: c for c in doc["checks"]}


def one(url: str, sql: str, args=None):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchone()


@pytest.fixture
def cluster(cli, citus_db):
    """The modules installed on the coordinator and laid out by db init's distribution plans, rows on
    both workers (autovacuum off for chatbot's two tables: the test decides when they are vacuumed)."""
    result = cli("db", "init", "--modules", "minno,chatbot,slackbot", env={"MINNO_DATABASE_URL": citus_db})
    assert result.exit_code == 0, result.stdout + result.stderr
    with psycopg.connect(citus_db, autocommit=True) as conn:
        for table in ("chatbot.conversations", "chatbot.messages"):
            conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T1', 'one')")
        conn.execute("INSERT INTO chatbot.conversations (user_id) SELECT 'u' || g FROM generate_series(1, 2000) g")
        conn.execute("INSERT INTO chatbot.messages (conversation_id, role, content) "
                     "SELECT c.id, CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'assistant' END, repeat('m', 200) "
                     "FROM chatbot.conversations c, generate_series(1, %s / 2000) g", (MESSAGES,))
    return citus_db


def worker_ports(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT nodeport FROM pg_dist_node WHERE groupid <> 0 ORDER BY nodeport").fetchall()]


def test_sizes_sum_the_workers_not_the_coordinators_shell_tables(cli, cluster):
    total, shell, heap = one(cluster, "SELECT citus_total_relation_size('chatbot.messages'), "
                                      "pg_total_relation_size('chatbot.messages'), "
                                      "citus_table_size('chatbot.messages')")
    assert total > 20 * shell and heap < total  # the workers hold the rows; the coordinator an empty shell
    with psycopg.connect(cluster, autocommit=True) as conn:
        nodes = [int(r[0]) for r in conn.execute(
            "SELECT result FROM run_command_on_all_nodes('SELECT pg_database_size(current_database())')")]
    _, checks = health(cli, cluster, "--only", "sizes")
    c = checks["sizes"]
    assert c["status"] == "OK", c
    assert f"chatbot.messages {human_size(total)}" in c["value"], c  # first: the largest
    assert c["value"].index("chatbot.messages") < c["value"].index("chatbot.conversations"), c
    assert c["metrics"]["largest_table_size"] == total, c
    assert "3 nodes" in c["value"], c
    assert abs(c["metrics"]["database_size"] - sum(nodes)) < 0.05 * sum(nodes), (c, nodes)
    # the table-size threshold is judged on the cluster's size: 1 MB is far above the shell's
    code, checks = health(cli, cluster, "--only", "sizes", "-t", "table-size-warning=1MB")
    assert checks["sizes"]["status"] == "WARNING" and code == 1, checks["sizes"]


def test_rows_left_in_the_coordinators_shell_after_distributing_are_named(cli, citus_db):
    """create_distributed_table copies a table's rows to the shards and leaves them, unseen, in the
    coordinator's table until truncate_local_data_after_distributing_table: space no query uses."""
    with psycopg.connect(citus_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.notes (id int, body text)")
        conn.execute("INSERT INTO public.notes SELECT g, repeat('n', 200) FROM generate_series(1, 5000) g")
        conn.execute("SELECT create_distributed_table('public.notes', 'id')")
        kept = conn.execute("SELECT pg_total_relation_size('public.notes')").fetchone()[0]
    _, checks = health(cli, citus_db, "--only", "sizes")
    c = checks["sizes"]
    assert f"the coordinator still keeps {human_size(kept)} of rows from before 1 table was distributed: " \
           f"public.notes" in c["value"], c
    assert "truncate them" in c["hint"], c
    result = cli("health", "--only", "sizes", "--hints", env={"MINNO_DATABASE_URL": citus_db})
    assert "SELECT truncate_local_data_after_distributing_table($$public.notes$$);" in result.stdout, result.stdout
    with psycopg.connect(citus_db, autocommit=True) as conn:
        conn.execute("SELECT truncate_local_data_after_distributing_table('public.notes')")
    _, checks = health(cli, citus_db, "--only", "sizes")
    assert "still keeps" not in checks["sizes"]["value"], checks["sizes"]


def test_shards_and_bytes_per_worker_are_reported_and_balanced(cli, cluster):
    with psycopg.connect(cluster, autocommit=True) as conn:
        per_node = {port: (count, int(size)) for port, count, size in conn.execute(
            "SELECT nodeport, count(*), sum(shard_size) FROM citus_shards "
            "WHERE citus_table_type = 'distributed' GROUP BY nodeport").fetchall()}
    assert sorted(per_node) == worker_ports(cluster)
    _, checks = health(cli, cluster, "--only", "shard_balance", "-t", "shard-balance-min-size=0")
    c = checks["shard_balance"]
    assert c["status"] == "OK", c
    for port, (count, size) in per_node.items():
        assert f"127.0.0.1:{port} {count} shards, {human_size(size)}" in c["value"], (c, per_node)
    assert c["metrics"]["shard_bytes_max"] == max(s for _, s in per_node.values()), c


def test_a_worker_holding_far_more_than_its_share_warns(cli, citus_db):
    with psycopg.connect(citus_db, autocommit=True) as conn:  # one hot key: every row in one shard
        conn.execute("CREATE TABLE public.hot (tenant int, body text)")
        conn.execute("SELECT create_distributed_table('public.hot', 'tenant')")
        conn.execute("INSERT INTO public.hot SELECT 7, repeat('h', 200) FROM generate_series(1, 20000)")
        port = conn.execute("SELECT nodeport FROM citus_shards WHERE table_name = 'public.hot'::regclass "
                            "ORDER BY shard_size DESC LIMIT 1").fetchone()[0]
    _, checks = health(cli, citus_db, "--only", "shard_balance")
    c = checks["shard_balance"]  # a few MB: too little to judge by default
    assert c["status"] == "OK" and "too little" in c["value"], c
    code, checks = health(cli, citus_db, "--only", "shard_balance", "-t", "shard-balance-min-size=0")
    c = checks["shard_balance"]
    assert c["status"] == "WARNING" and code == 1, c
    assert f"127.0.0.1:{port} holds" in c["value"], c
    assert "(hot_" in c["hint"] and "a hot distribution key" in c["hint"], c  # one shard holds it all


def test_every_node_reaches_every_other(cli, cluster):
    _, checks = health(cli, cluster, "--only", "citus_nodes")
    c = checks["citus_nodes"]
    assert c["status"] == "OK", c
    assert "3 nodes" in c["value"] and "2 workers" in c["value"], c
    assert c["metrics"]["citus_unreachable"] == 0, c


def test_an_inactive_node_warns_and_is_named(cli, citus_db):
    port = free_port()  # nothing listens there: the node can only be added inactive
    with psycopg.connect(citus_db, autocommit=True) as conn:
        conn.execute("SELECT citus_add_inactive_node('127.0.0.1', %s)", (port,))
    code, checks = health(cli, citus_db, "--only", "citus_nodes")
    c = checks["citus_nodes"]
    assert c["status"] == "WARNING" and code == 1, c
    assert f"inactive: 127.0.0.1:{port}" in c["value"] and "citus_activate_node" in c["hint"], c
    assert c["metrics"]["citus_inactive"] == 1 and c["metrics"]["citus_unreachable"] == 0, c


def test_a_stopped_worker_is_critical_and_named(cli, citus_db, tmp_path):
    """A fourth worker of this database alone, added and then stopped: the session's cluster is untouched."""
    name = urlparse(citus_db).path.lstrip("/")
    extra = Cluster("citus_extra", DEBIAN_PG15, tmp_path / "extra", ssl=False, preload=("citus",)).start()
    try:
        with psycopg.connect(**extra.admin_params("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(**extra.admin_params(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION citus")
        with psycopg.connect(citus_db, autocommit=True) as conn:
            conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (extra.port,))
    finally:
        extra.stop()
    code, checks = health(cli, citus_db)
    c = checks["citus_nodes"]
    assert c["status"] == "CRITICAL" and code == 2, c
    assert f"cannot reach 127.0.0.1:{extra.port}" in c["value"], c
    assert f"127.0.0.1:{extra.port} cannot reach" not in c["value"], c  # it was not asked: it does not answer
    assert c["metrics"]["citus_unreachable"] == 1, c
    # the checks that ask every node say which one did not answer: not the cluster's figures, so never OK
    for other in ("sizes", "dead_tuples", "vacuum_analyze"):
        assert checks[other]["status"] == "UNKNOWN", checks[other]
        assert f"could not ask 127.0.0.1:{extra.port}" in checks[other]["value"], checks[other]


def test_dead_rows_and_stale_statistics_of_the_shards(cli, cluster):
    with psycopg.connect(cluster, autocommit=True) as conn:
        conn.execute("DELETE FROM chatbot.messages WHERE role = 'user'")  # half of them, on both workers
    deadline = time.monotonic() + 20  # the workers' statistics are flushed within a second or so
    while True:
        _, checks = health(cli, cluster, "--only", "dead_tuples,vacuum_analyze")
        c = checks["dead_tuples"]
        if c["status"] == "WARNING" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert c["status"] == "WARNING", c
    assert f"chatbot.messages has {MESSAGES // 2:,} dead rows to {MESSAGES // 2:,} live" in c["value"], c
    citus_tables = one(cluster, "SELECT count(*) FROM pg_dist_partition")[0]  # with the local tables FKs bring in
    assert "over 32 shards" in c["value"], c
    assert f"the shards of {citus_tables} Citus tables, on 3 nodes" in c["value"], c
    v = checks["vacuum_analyze"]  # 20,000 rows inserted and 10,000 deleted, never analyzed
    assert v["status"] == "WARNING" and "chatbot.messages" in v["value"], v
    with psycopg.connect(cluster, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) chatbot.messages")  # the coordinator sends it to every shard
    deadline = time.monotonic() + 20
    while True:
        _, checks = health(cli, cluster, "--only", "dead_tuples,vacuum_analyze")
        if checks["dead_tuples"]["status"] == "OK" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert checks["dead_tuples"]["status"] == "OK", checks["dead_tuples"]
    assert "chatbot.messages" not in checks["vacuum_analyze"]["value"], checks["vacuum_analyze"]


COORDINATOR_ONLY = ("connections", "long_queries", "idle_in_transaction", "blocked_queries", "xid_age", "sequences",
                    "invalid_indexes", "unused_indexes", "index_bloat", "cache_hit_ratio", "replication_lag",
                    "standbys", "replication_slots", "slow_queries")


def test_checks_of_the_coordinator_alone_say_so(cli, cluster):
    _, checks = health(cli, cluster)
    for name in COORDINATOR_ONLY:
        assert "coordinator only" in (checks[name]["value"] or ""), checks[name]
    for name in ("sizes", "dead_tuples", "vacuum_analyze", "citus_nodes", "shard_balance"):
        assert "coordinator only" not in (checks[name]["value"] or ""), checks[name]
        assert checks[name]["status"] != "UNKNOWN", checks[name]


def test_a_worker_points_at_the_coordinator(cli, citus, cluster):
    name = urlparse(cluster).path.lstrip("/")
    _, checks = health(cli, citus.worker_url(0, name))
    for check in ("citus_nodes", "shard_balance"):
        c = checks[check]
        assert c["status"] == "OK" and "skipped: a Citus worker" in c["value"], c
    assert "this worker only" in checks["connections"]["value"], checks["connections"]
    for check in ("sizes", "dead_tuples", "vacuum_analyze"):  # the shards are hidden from a session there
        assert "a Citus worker: its shards are not counted here" in checks[check]["value"], checks[check]


def test_plain_postgresql_is_unchanged(cli, database):
    _, checks = health(cli, database)
    for check in ("citus_nodes", "shard_balance"):
        c = checks[check]
        assert c["status"] == "OK" and c["value"] == "skipped: not a Citus cluster", c
    for c in checks.values():
        assert "coordinator" not in str(c["value"]) and "Citus" not in str(c["value"]).replace(
            "skipped: not a Citus cluster", ""), c


def test_plain_postgresql_asks_nothing_of_citus_but_the_one_probe(cli, pg15):
    """The detection is part of the query the report makes anyway: on plain PostgreSQL the run sends no
    statement about Citus beyond it (pg_stat_statements of this database, on Debian's 15 which preloads it)."""
    import uuid

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(pg15.url(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")  # a full table evicts the least used entries
        health(cli, pg15.url(name))
        with psycopg.connect(pg15.url(name), autocommit=True) as conn:
            ran = [r[0] for r in conn.execute(
                "SELECT query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) AND query NOT ILIKE '%pg_stat_statements_reset%'")]
    finally:
        with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert len(ran) > 20, ran  # the report's statements were counted
    assert not [q for q in ran if "citus" in q.lower() or "pg_dist" in q], ran
    first = [q for q in ran if "pg_is_in_recovery()" in q and "current_user" in q]  # the report's first query
    assert len(first) == 1 and "FROM pg_extension WHERE extname" in first[0], first
