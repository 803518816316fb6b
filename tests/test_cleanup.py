"""`minnoctl cleanup`: retention on real servers, boundaries, dry runs, archives, one run at a time
and kill -9 with real processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from minnoctl import cleanup, locks
from minnoctl.errors import ExitCode

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)


def one_error_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("minnoctl: error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def run(cli, migrated):
    def go(*args: str):
        return cli("cleanup", *args, env={"MINNO_DATABASE_URL": migrated})
    return go


def ts(delta: dt.timedelta) -> dt.datetime:
    """A TIMESTAMP (UTC) value relative to NOW."""
    return (NOW + delta).replace(tzinfo=None)


def add_conversation(conn, updated: dt.timedelta, messages: list[tuple[str, dt.timedelta]]) -> str:
    cid = conn.execute("INSERT INTO chatbot.conversations (user_id, created_at, updated_at) VALUES ('u', %s, %s) "
                       "RETURNING id", (ts(updated), ts(updated))).fetchone()[0]
    for role, when in messages:
        conn.execute("INSERT INTO chatbot.messages (conversation_id, role, content, created_at) "
                     "VALUES (%s, %s, %s, %s)",
                     (cid, role, f"{role} at {when}", ts(when)))
    return str(cid)


def run_fixed(url: str, **kwargs) -> cleanup.RunResult:
    with psycopg.connect(url, autocommit=True) as conn:
        plans = cleanup.plan(conn, only=kwargs.pop("only", []), ages=kwargs.pop("ages", None))
        return cleanup.run(conn, plans, now=NOW, **kwargs)


def by_task(result: cleanup.RunResult) -> dict[str, cleanup.TaskResult]:
    return {t.task: t for t in result.tasks}


DAY = dt.timedelta(days=1)
SEC = dt.timedelta(seconds=1)


def test_rows_exactly_at_the_cutoff_stay_and_older_ones_go(migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        at = add_conversation(conn, -90 * DAY, [("user", -90 * DAY)])
        older = add_conversation(conn, -90 * DAY - SEC, [("user", -91 * DAY), ("system", -90 * DAY - SEC)])
        recent_message = add_conversation(conn, -200 * DAY, [("user", -200 * DAY), ("user", -DAY)])
        keep = add_conversation(conn, -DAY, [("system", -30 * DAY), ("system", -30 * DAY - SEC), ("user", -40 * DAY)])
        conn.execute("INSERT INTO slackbot.audit_logs (event_type, event_category, event_description, created_at) "
                     "VALUES ('a', 'b', 'at', %s), ('a', 'b', 'older', %s)", (NOW - 90 * DAY, NOW - 90 * DAY - SEC))
        conn.execute("INSERT INTO slackbot.user_sessions (slack_user_id, slack_channel_id, slack_team_id, "
                     "last_activity) VALUES ('U1', 'C', 'T', %s), ('U2', 'C', 'T', %s)", (NOW - DAY, NOW - DAY - SEC))
        conn.execute("INSERT INTO slackbot.query_cache (query_hash, original_query, normalized_query, result_data, "
                     "expires_at, created_at) VALUES ('h1', 'q', 'q', '{}', %s, %s), ('h2', 'q', 'q', '{}', %s, %s)",
                     (NOW, NOW - DAY, NOW - SEC, NOW - DAY))
    result = by_task(run_fixed(migrated))
    assert result["chatbot-conversations"].rows == 1  # `older` only
    assert result["chatbot-conversations"].archived == 3  # it and its two messages
    assert result["chatbot-system-messages"].rows == 1  # keep's system message one second past 30 days
    assert result["slackbot-audit-logs"].rows == 1 and result["slackbot-sessions"].rows == 1
    assert result["slackbot-cache"].rows == 1
    with psycopg.connect(migrated) as conn:
        left = {str(r[0]) for r in conn.execute("SELECT id FROM chatbot.conversations")}
        assert left == {at, recent_message, keep} and older not in left
        # no cascade surprise: every message of a kept conversation stays (but the overdue system one)
        assert conn.execute("SELECT count(*) FROM chatbot.messages WHERE conversation_id = %s",
                            (recent_message,)).fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM chatbot.messages WHERE conversation_id = %s",
                            (keep,)).fetchone()[0] == 2
        assert conn.execute("SELECT event_description FROM slackbot.audit_logs").fetchall() == [("at",)]
        assert conn.execute("SELECT slack_user_id FROM slackbot.user_sessions WHERE is_active").fetchall() == [("U1",)]
        assert conn.execute("SELECT query_hash FROM slackbot.query_cache").fetchall() == [("h1",)]


def test_archives_hold_exactly_what_was_removed(migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        ids = [add_conversation(conn, -100 * DAY - i * SEC, [("user", -101 * DAY), ("assistant", -100 * DAY - i * SEC)])
               for i in range(30)]
        before = conn.execute("SELECT id, role, content, created_at FROM chatbot.messages ORDER BY id").fetchall()
        conv_before = conn.execute("SELECT id, user_id, created_at, updated_at FROM chatbot.conversations "
                                   "ORDER BY id").fetchall()
        conn.execute("INSERT INTO slackbot.audit_logs (event_type, event_category, event_description, event_data, "
                     "created_at) SELECT 'e', 'c', 'd' || g, jsonb_build_object('g', g), %s "
                     "FROM generate_series(1, 25) g",
                     (NOW - 100 * DAY,))
        audit_before = conn.execute(
            "SELECT id, event_description, event_data FROM slackbot.audit_logs ORDER BY id").fetchall()
    result = by_task(run_fixed(migrated, batch_size=7))
    assert result["chatbot-conversations"].batches >= 3 and result["chatbot-conversations"].rows == 30
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0] == 0
        assert conn.execute(
            "SELECT id, role, content, created_at FROM chatbot.messages_archive ORDER BY id").fetchall() == before
        assert conn.execute("SELECT id, user_id, created_at, updated_at FROM chatbot.conversations_archive "
                            "ORDER BY id").fetchall() == conv_before
        assert conn.execute("SELECT id, event_description, event_data FROM slackbot.audit_logs_archive "
                            "ORDER BY id").fetchall() == audit_before
    assert sorted(ids) == sorted(str(r[0]) for r in conv_before)


def test_dry_run_counts_exactly_what_a_real_run_does(cli, migrated):
    from minnoctl import crypto

    env = {"MINNO_DATABASE_URL": migrated, "MINNO_MASTER_KEY": crypto.encode_key(crypto.generate_key())}
    assert cli("seed", "--scenario", "overdue", "--yes", env=env).exit_code == 0  # the rows that are due
    dry = cli("cleanup", "--dry-run", "--format", "json", env=env)
    assert dry.exit_code == 0, dry.stderr
    planned = {t["task"]: (t["rows"], t["archived"]) for t in json.loads(dry.stdout)["tasks"]}
    real = cli("cleanup", "--format", "json", "--batch-size", "2", env=env)
    assert real.exit_code == 0, real.stderr
    doc = json.loads(real.stdout)
    done = {t["task"]: (t["rows"], t["archived"]) for t in doc["tasks"]}
    assert planned == done
    assert sum(r for r, _ in done.values()) > 10  # the overdue scenario gives every task work
    assert all(t["status"] in ("ok", "nothing", "skipped") for t in doc["tasks"])
    again = cli("cleanup", "--dry-run", "--format", "json", env=env)
    assert all(t["rows"] == 0 for t in json.loads(again.stdout)["tasks"])
    listed = json.loads(cli("cleanup", "--list", "--format", "json", env=env).stdout)
    assert {t["task"] for t in listed} == set(done) and all(t["due_now"] in (0, None) for t in listed)


def test_expiry_tasks_and_grace(run, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO assistant.sessions (session_id, user_id, expires_at) VALUES "
                     "('old', 'u', now() - interval '2 days'), ('recent', 'u', now() - interval '1 hour'), "
                     "('live', 'u', now() + interval '1 hour')")
        conn.execute("INSERT INTO assistant.confirmations (session_id, user_id, confirmation_type, confirmation_data, "
                     "expires_at) VALUES ('live', 'u', 'send', '{}', now() - interval '1 minute'), "
                     "('live', 'u', 'send', '{}', now() + interval '1 hour')")
        conn.execute("INSERT INTO supervisor.projects (name, path) VALUES ('p', '/p')")
        conn.execute("INSERT INTO supervisor.port_ranges (range_name, start_port, end_port) VALUES ('r', 30000, 30009)")
        conn.execute("""INSERT INTO supervisor.port_allocations (project_id, port_range_id, port_number, service_name,
                        lease_expires_at) SELECT p.id, r.id, 30000 + g, 's' || g,
                        CASE WHEN g = 0 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END
                        FROM supervisor.projects p, supervisor.port_ranges r, generate_series(0, 1) g""")
        conn.execute("""INSERT INTO supervisor.port_reservations (project_id, port_range_id, port_number, service_name,
                        reserved_by, created_at, expires_at) SELECT p.id, r.id, 30005, 'x', 't',
                        now() - interval '2 hours', now() - interval '1 hour'
                        FROM supervisor.projects p, supervisor.port_ranges r""")
    result = run("--older-than", "assistant-sessions=1", "--format", "json")
    assert result.exit_code == 0, result.stderr
    done = {t["task"]: t["rows"] for t in json.loads(result.stdout)["tasks"]}
    assert done["assistant-sessions"] == 1 and done["assistant-confirmations"] == 1
    assert done["port-leases"] == 1 and done["port-reservations"] == 1
    with psycopg.connect(migrated) as conn:
        assert [r[0] for r in conn.execute("SELECT session_id FROM assistant.sessions ORDER BY 1")
                ] == ["live", "recent"]
        assert sorted(r[0] for r in conn.execute("SELECT status FROM assistant.confirmations")
                      ) == ["expired", "pending"]
        assert conn.execute("SELECT port_number, status FROM supervisor.port_allocations ORDER BY 1").fetchall() == \
            [(30000, "released"), (30001, "allocated")]


@pytest.mark.parametrize("args, phrase", [
    (["--only", "nope"], "--only: unknown task 'nope'"),
    (["--skip", "nope"], "--skip: unknown task 'nope'"),
    (["--older-than", "nope=3"], "--older-than: unknown task 'nope'"),
    (["--older-than", "chatbot-conversations=0"], "use a number of days (30) or a duration"),
    (["--older-than", "chatbot-conversations=-5"], "use a number of days (30) or a duration"),
    (["--older-than", "chatbot-conversations=soon"], "is not a duration — use a number of days"),
    (["--older-than", "chatbot-conversations"], "is not TASK=DAYS"),
])
def test_bad_input_is_one_clear_line(run, migrated, args, phrase):
    result = run(*args)
    assert result.exit_code == ExitCode.USAGE
    assert phrase in one_error_line(result)


def test_a_module_that_is_not_installed_is_skipped_with_a_note(cli, database):
    env = {"MINNO_DATABASE_URL": database}
    assert cli("db", "init", "--modules", "chatbot", env=env).exit_code == 0
    result = cli("cleanup", "--format", "json", env=env)
    assert result.exit_code == 0, result.stderr
    tasks = {t["task"]: t for t in json.loads(result.stdout)["tasks"]}
    assert tasks["slackbot-audit-logs"]["status"] == "skipped"
    assert "not installed" in tasks["slackbot-audit-logs"]["note"]
    assert tasks["chatbot-conversations"]["status"] == "nothing"
    assert "skipped slackbot-audit-logs" in result.stderr


def test_quiet_prints_nothing_when_there_is_nothing_to_do(run, migrated):
    result = run("--quiet")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    with psycopg.connect(migrated, autocommit=True) as conn:
        add_conversation(conn, -100 * DAY, [("user", -100 * DAY)])
    result = run("--quiet")
    assert result.exit_code == 0 and "chatbot-conversations" in result.stdout


def test_runs_are_recorded_and_max_runtime_stops_and_resumes(cli, migrated):
    env = {"MINNO_DATABASE_URL": migrated}
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO slackbot.audit_logs (event_type, event_category, event_description, created_at) "
                     "SELECT 'e', 'c', 'd', now() - interval '100 days' - g * interval '1 second' "
                     "FROM generate_series(1, 200000) g")
    result = cli("cleanup", "--only", "slackbot-audit-logs", "--batch-size", "1", "--max-runtime", "0.1",
                 "--format", "json", env=env)
    assert result.exit_code == ExitCode.PARTIAL, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "partial" and 0 < doc["rows"] < 200000
    assert doc["tasks"][0]["oldest_overdue"] is not None
    result = cli("cleanup", "--only", "slackbot-audit-logs", "--format", "json", env=env)
    assert result.exit_code == 0
    assert doc["rows"] + json.loads(result.stdout)["rows"] == 200000
    with psycopg.connect(migrated) as conn:
        runs = conn.execute("SELECT status, rows, dry_run FROM minnoctl.cleanup_runs ORDER BY id").fetchall()
    assert [r[0] for r in runs] == ["partial", "ok"] and runs[0][1] + runs[1][1] == 200000


def test_a_second_run_reports_the_lock_at_once(run, migrated):
    with psycopg.connect(migrated, autocommit=True) as holder:
        holder.execute("SELECT set_config('application_name', 'minnoctl cleanup pid=4242 host=cron1', false)")
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (locks.NAMESPACE, locks.KEYS["cleanup"]))
        t0 = time.monotonic()
        result = run()
        assert time.monotonic() - t0 < 5
        assert result.exit_code == ExitCode.LOCK_HELD
        assert "pid=4242 host=cron1" in one_error_line(result)


def _fill_conversations(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""INSERT INTO chatbot.conversations (id, user_id, created_at, updated_at)
                        SELECT gen_random_uuid(), 'u' || g, now() - interval '200 days', now() - interval '100 days'
                        FROM generate_series(1, %s) g""", (n,))
        conn.execute("""INSERT INTO chatbot.messages (conversation_id, role, content, created_at)
                        SELECT c.id, r.role, 'message', now() - interval '150 days'
                        FROM chatbot.conversations c, (VALUES ('user'), ('assistant'), ('system')) r (role)""")


def _spawn(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "minnoctl", "cleanup", *args],
                            env=dict(os.environ, MINNO_DATABASE_URL=url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_cleanups_started_at_once_one_works_one_reports_the_lock(migrated):
    _fill_conversations(migrated, 30000)  # a few seconds of work: the runs overlap
    procs = [_spawn(migrated, "--batch-size", "10", "--format", "json") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, ExitCode.LOCK_HELD], outs
    loser = outs[[p.returncode for p in procs].index(ExitCode.LOCK_HELD)]
    assert "cleanup lock is held by minnoctl cleanup" in loser[1] and loser[0] == ""
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0] == 0


def test_a_killed_run_leaves_no_partial_batch_and_the_next_run_finishes(migrated):
    _fill_conversations(migrated, 6000)
    proc = _spawn(migrated, "--only", "chatbot-conversations", "--batch-size", "20")
    deadline = time.monotonic() + 60
    with psycopg.connect(migrated, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM chatbot.conversations_archive").fetchone()[0] < 200:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)  # the server ends the killed session's transaction
        left = conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0]
        archived = conn.execute("SELECT count(*) FROM chatbot.conversations_archive").fetchone()[0]
        assert 0 < left < 6000 and left + archived == 6000
        # every batch is whole: an archived conversation is gone with all three messages archived
        assert conn.execute("SELECT count(*) FROM chatbot.messages_archive").fetchone()[0] == 3 * archived
        assert conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0] == 3 * left
        assert conn.execute("SELECT count(*) FROM chatbot.conversations c JOIN chatbot.conversations_archive a "
                            "USING (id)").fetchone()[0] == 0
    proc = _spawn(migrated, "--only", "chatbot-conversations", "--format", "json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads(out)["rows"] == left
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM chatbot.conversations").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM chatbot.messages_archive").fetchone()[0] == 18000
        runs = conn.execute("SELECT status, error FROM minnoctl.cleanup_runs ORDER BY id").fetchall()
    assert runs[0][0] == "failed" and "killed" in runs[0][1] and runs[1][0] == "ok"
