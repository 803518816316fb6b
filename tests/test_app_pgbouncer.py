"""An app role through a real PgBouncer in transaction pooling, in front of PostgreSQL 15: its
search_path holds on every transaction (a role setting, applied when the pooled server connection
starts), whichever client the server connection served before; `app create` itself runs through it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from test_app import app_connect, drop_new_roles, env_url, _roles
from test_pgbouncer import PGBOUNCER, Bouncer
from test_seed import env_for

MODULES = "minno,chatbot,assistant,supervisor,slackbot"
ROLES = ("chatbot_app", "assistant_app")


@pytest.fixture(scope="module")
def app_pool(tmp_path_factory, pg15):
    if not os.path.exists(PGBOUNCER):
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is missing in CI: .ci/run must install it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    bouncer = Bouncer(tmp_path_factory.mktemp("pgbouncer_app"), pg15.port, "transaction")
    users = bouncer.folder / "users.txt"  # auth_type trust still wants every user listed
    users.write_text(users.read_text() + "".join(f'"{role}" ""\n' for role in ROLES))
    yield bouncer.start()
    bouncer.stop()


@pytest.fixture
def pooled_db(pg15, cli):
    import uuid

    before = _roles(pg15.url("postgres"))
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    assert cli("db", "init", "--modules", MODULES, "--yes", env=env_for(pg15.url(name))).exit_code == 0
    yield name
    drop_new_roles(pg15.url("postgres"), [pg15.url(name)], before)
    with psycopg.connect(pg15.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_search_path_holds_on_every_pooled_transaction(cli, app_pool, pooled_db, tmp_path):
    env = env_for(app_pool.url(pooled_db))  # minnoctl itself through the pool
    result = cli("app", "create", "chatbot", "--format", "json", env=env)
    assert result.exit_code == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["url"] == f"postgresql://chatbot_app@127.0.0.1:{app_pool.port}/{pooled_db}"
    other = cli("app", "create", "assistant", "--format", "json", env=env)
    assert other.exit_code == 0, other.stderr
    chatbot_url = env_url(Path(record["env_file"]))
    assistant_url = env_url(tmp_path / "assistant_app.env")
    # two clients of the role share the pool's one server connection (default_pool_size = 1)
    with app_connect(chatbot_url) as one, app_connect(chatbot_url) as two:
        pids = set()
        for _ in range(5):
            for client in (one, two):
                with client.transaction():
                    assert client.execute("SHOW search_path").fetchone()[0] == "chatbot, minno, public"
                    client.execute("INSERT INTO conversations (user_id) VALUES ('U1')")
                    pids.add(client.execute("SELECT pg_backend_pid()").fetchone()[0])
                assert client.execute("SELECT count(*) FROM conversations").fetchone()[0] > 0
        assert len(pids) == 1  # really pooled: one server connection served both clients
    with app_connect(assistant_url) as app:
        assert app.execute("SHOW search_path").fetchone()[0] == "assistant, minno, public"
        app.execute("SELECT * FROM user_tokens")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT * FROM chatbot.conversations")
    # minnoctl left nothing on the pooled server connections: the admin's sessions are as the server starts them
    with psycopg.connect(app_pool.url(pooled_db), autocommit=True, prepare_threshold=None) as admin:
        assert admin.execute("SHOW search_path").fetchone()[0] == '"$user", public'
        assert admin.execute("SHOW lock_timeout").fetchone()[0] == "0"
    listed = cli("app", "list", "--format", "json", env=env)
    assert listed.exit_code == 0, listed.stdout
    assert [r["status"] for r in json.loads(listed.stdout)] == ["complete", "complete"]
