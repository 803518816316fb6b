"""`minnoctl ports`: an allocator that never hands out one port twice, on real servers, with real
processes allocating at once (with and without the unique index, to show the algorithm itself is
right), and every bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from minnoctl.errors import ExitCode


def one_error_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("minnoctl: error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def db(migrated):
    """A migrated database with projects alpha and beta and a range `ci` of 10 ports (cooldown 1 s)."""
    with psycopg.connect(migrated, autocommit=True) as conn:
        for name in ("alpha", "beta"):
            conn.execute("INSERT INTO supervisor.projects (name, path) VALUES (%s, %s)", (name, f"/srv/{name}"))
        conn.execute("INSERT INTO supervisor.port_ranges (range_name, start_port, end_port, cooldown_seconds, "
                     "metadata) "
                     "VALUES ('ci', 41000, 41009, 1, '{\"service_types\": [\"api\"]}')")
    return migrated


@pytest.fixture
def run(cli, db):
    def go(*args: str):
        return cli(*args, env={"MINNO_DATABASE_URL": db})
    return go


def allocate(run, service: str, *extra: str, project: str = "alpha") -> int:
    result = run("ports", "allocate", "--project", project, "--service", service, "--range", "ci", *extra,
                 "--format", "plain")
    assert result.exit_code == 0, result.stderr
    return int(result.stdout.strip())


def active(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT port_number, service_name FROM supervisor.port_allocations "
                            "WHERE status IN ('allocated', 'in_use') ORDER BY port_number").fetchall()


# ---------------------------------------------------------------------------------------------
# Concurrency: real processes


WORKER = """
import os, sys, time
from minnoctl import ports
from minnoctl.config import load_settings
from minnoctl.connection import connect
conn = connect(load_settings(os.environ["URL"]), autocommit=True)
go = os.environ["GO"]
while not os.path.exists(go):
    time.sleep(0.002)
try:
    got = ports.allocate(conn, project="alpha", service=sys.argv[1], range_name="wide")
    print(got.port)
except Exception as exc:
    print(f"error {exc.__class__.__name__}: {exc}")
"""


def _allocate_at_once(url: str, services: list[str], tmp_path: Path) -> list[str]:
    go = tmp_path / "go"
    env = dict(os.environ, URL=url, GO=str(go))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, s], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in services]
    time.sleep(3)  # every worker imported minnoctl and connected, waiting for the signal
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    return outs


@pytest.mark.parametrize("unique_index", [True, False], ids=["with-index", "index-dropped"])
def test_fifty_processes_at_once_get_fifty_distinct_ports(db, tmp_path, unique_index):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO supervisor.port_ranges (range_name, start_port, end_port) "
                     "VALUES ('wide', 42000, 42199)")
        if not unique_index:  # the algorithm alone, without the constraint that would catch a duplicate
            conn.execute("DROP INDEX supervisor.idx_port_allocations_active_port")
    outs = _allocate_at_once(db, [f"svc-{i}" for i in range(50)], tmp_path)
    assert all(o.isdigit() for o in outs), outs
    got = sorted(int(o) for o in outs)
    assert len(set(got)) == 50
    assert got == list(range(42000, 42050))  # the lowest free ports, none skipped
    rows = active(db)
    assert len(rows) == 50 and len({r[0] for r in rows}) == 50


def test_concurrent_calls_for_one_service_get_one_port(db, tmp_path):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO supervisor.port_ranges (range_name, start_port, end_port) "
                     "VALUES ('wide', 42000, 42199)")
        conn.execute("DROP INDEX supervisor.idx_port_allocations_active_service")  # the lock alone
    outs = _allocate_at_once(db, ["same"] * 12, tmp_path)
    assert len(set(outs)) == 1 and outs[0].isdigit(), outs
    assert active(db) == [(int(outs[0]), "same")]


def test_an_application_inserting_directly_is_respected(run, db):
    first = allocate(run, "one")
    with psycopg.connect(db, autocommit=True) as conn:  # an application bypassing allocate_port
        conn.execute("INSERT INTO supervisor.port_allocations (project_id, port_range_id, port_number, service_name) "
                     "SELECT p.id, r.id, %s, 'direct' FROM supervisor.projects p, supervisor.port_ranges r "
                     "WHERE p.name = 'beta' AND r.range_name = 'ci'", (first + 1,))
        # and one that calls the SQL function itself
        sql_port = conn.execute("SELECT supervisor.allocate_port(p.id, r.id, 'from-sql') FROM supervisor.projects p, "
                                "supervisor.port_ranges r WHERE p.name = 'beta' AND r.range_name = 'ci'").fetchone()[0]
    assert sql_port == first + 2
    assert allocate(run, "two") == first + 3


# ---------------------------------------------------------------------------------------------
# Idempotence, release, cooldown, exhaustion


def test_allocate_is_idempotent_and_json_says_so(run, db):
    result = run("ports", "allocate", "-p", "alpha", "-s", "api", "--service-type", "api", "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["port"] == 41000 and doc["state"] == "new" and doc["range"] == "ci"
    again = json.loads(run("ports", "allocate", "-p", "alpha", "-s", "api", "--service-type", "api",
                           "--format", "json").stdout)
    assert again["port"] == 41000 and again["state"] == "existing"
    assert allocate(run, "api", "--protocol", "udp") == 41000  # another protocol is another port space
    assert allocate(run, "api", "--hostname", "ci-runner-7") == 41000  # and so is another host
    assert allocate(run, "api", project="beta") == 41001
    assert len(active(db)) == 4


def test_release_is_idempotent_and_a_released_port_cools_down_first(run, db):
    # Not timing-sensitive: the cooldown is an hour, so nothing ends it while the test runs however
    # loaded the machine is; its end is then brought about in the database (the release, and the
    # pool's available_at that the trigger set from it, moved two hours back), instead of a sleep.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE supervisor.port_ranges SET cooldown_seconds = 3600 WHERE range_name = 'ci'")
    a = allocate(run, "a")
    b = allocate(run, "b")
    assert (a, b) == (41000, 41001)
    result = run("ports", "release", str(a), "--protocol", "tcp", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["service"] == "a"
    again = run("ports", "release", str(a))
    assert again.exit_code == 0 and json.loads(run("ports", "release", str(a), "--format", "json").stdout) == []
    assert "nothing to release" in again.stderr
    assert allocate(run, "c") == 41002  # 41000 is cooling down
    taken = run("ports", "allocate", "-p", "alpha", "-s", "d", "-r", "ci", "--port", str(a))
    assert taken.exit_code == ExitCode.PORT_TAKEN and "cools down" in one_error_line(taken)
    with psycopg.connect(db, autocommit=True) as conn:  # two hours later: the cooldown is over
        assert conn.execute("UPDATE supervisor.port_allocations SET released_at = released_at - interval '2 hours' "
                            "WHERE port_number = %s AND status = 'released'", (a,)).rowcount == 1
        assert conn.execute("UPDATE supervisor.port_pool SET available_at = available_at - interval '2 hours' "
                            "WHERE port_number = %s AND available_at > now()", (a,)).rowcount == 1
    assert allocate(run, "d") == 41000  # the lowest free port again, after the cooldown
    # released history is kept, and a service's ports can be released by name
    assert run("ports", "release", "--project", "alpha", "--service", "b").exit_code == 0
    with psycopg.connect(db) as conn:
        assert conn.execute(
            "SELECT count(*) FROM supervisor.port_allocations WHERE status = 'released'").fetchone()[0] == 2
    listed = json.loads(run("ports", "list", "--status", "all", "--format", "json").stdout)
    assert sorted((r["port"], r["status"]) for r in listed) == [
        (41000, "allocated"), (41000, "released"), (41001, "released"), (41002, "allocated")]
    assert [r["service"] for r in json.loads(run("ports", "list", "-p", "alpha", "--format", "json").stdout)
            ] == ["d", "c"]


def test_a_full_range_is_one_line_and_exit_17(run, db):
    for i in range(10):
        allocate(run, f"s{i}")
    result = run("ports", "allocate", "-p", "alpha", "-s", "one-too-many", "-r", "ci")
    assert result.exit_code == ExitCode.RANGE_FULL
    assert "no free port left in port range ci (41000-41009)" in one_error_line(result)
    ranges = {r["range"]: r for r in json.loads(run("ports", "range", "list", "--format", "json").stdout)}
    assert ranges["ci"]["allocated"] == 10 and float(ranges["ci"]["utilization_percent"]) == 100.0


def test_the_port_asked_for(run, db):
    assert allocate(run, "x", "--port", "41005") == 41005
    assert allocate(run, "x", "--port", "41005") == 41005  # idempotent
    result = run("ports", "allocate", "-p", "beta", "-s", "y", "-r", "ci", "--port", "41005")
    assert result.exit_code == ExitCode.PORT_TAKEN
    assert "held by service x of project alpha" in one_error_line(result)
    result = run("ports", "allocate", "-p", "alpha", "-s", "x", "-r", "ci", "--port", "41006")
    assert result.exit_code == ExitCode.PORT_TAKEN and "already holds port 41005" in one_error_line(result)
    assert allocate(run, "z") == 41000  # the lowest free port is unaffected


def test_leases(run, db):
    result = json.loads(run("ports", "allocate", "-p", "alpha", "-s", "l", "-r", "ci", "--lease", "1h30m",
                            "--format", "json").stdout)
    with psycopg.connect(db) as conn:
        left = conn.execute("SELECT lease_expires_at - now() FROM supervisor.port_allocations WHERE service_name = 'l'"
                            ).fetchone()[0]
    assert 5300 < left.total_seconds() <= 5400 and result["lease_expires_at"]
    run("ports", "allocate", "-p", "alpha", "-s", "l", "-r", "ci", "--lease", "2d")  # renewed
    with psycopg.connect(db) as conn:
        left = conn.execute("SELECT lease_expires_at - now() FROM supervisor.port_allocations WHERE service_name = 'l'"
                            ).fetchone()[0]
    assert left.total_seconds() > 86400


# ---------------------------------------------------------------------------------------------
# Reservations, ranges, this host


def test_a_reservation_holds_the_port_for_its_service_until_it_expires(run, db):
    result = run("ports", "reserve", "-p", "alpha", "-s", "web", "-r", "ci", "--ttl", "1h", "--format", "plain")
    assert result.exit_code == 0, result.stderr
    reserved = int(result.stdout)
    assert reserved == 41000
    assert allocate(run, "other", project="beta") == 41001  # skips the reserved port
    taken = run("ports", "allocate", "-p", "beta", "-s", "thief", "-r", "ci", "--port", "41000")
    assert taken.exit_code == ExitCode.PORT_TAKEN and "reserved for service web" in one_error_line(taken)
    assert allocate(run, "web") == 41000  # the service takes its reservation
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM supervisor.port_reservations").fetchone()[0] == 0
    short = run("ports", "reserve", "-p", "alpha", "-s", "soon", "-r", "ci", "--ttl", "1s", "--format", "plain")
    port = int(short.stdout)
    time.sleep(1.2)
    assert allocate(run, "late", project="beta") == port  # an expired reservation holds nothing


def test_ranges_add_list_disable(run, db):
    result = run("ports", "range", "add", "grpc", "--start", "50000", "--end", "50999", "--service-type", "grpc,rpc",
                 "--description", "gRPC", "--cooldown", "0")
    assert result.exit_code == 0, result.stderr
    got = run("ports", "allocate", "-p", "alpha", "-s", "g2", "--service-type", "rpc", "--format", "plain")
    assert got.exit_code == 0 and got.stdout.strip() == "50000"
    rows = {r["range"]: r for r in json.loads(run("ports", "range", "list", "--format", "json").stdout)}
    assert rows["grpc"]["total"] == 1000 and rows["grpc"]["service_types"] == "grpc,rpc"
    assert run("ports", "range", "disable", "grpc").exit_code == 0
    assert run("ports", "range", "disable", "grpc").exit_code == 0  # idempotent
    result = run("ports", "allocate", "-p", "alpha", "-s", "g3", "-r", "grpc")
    assert result.exit_code == ExitCode.USAGE and "disabled" in one_error_line(result)
    # a disabled range no longer blocks an overlapping new one
    assert run("ports", "range", "add", "grpc2", "--start", "50500", "--end", "50600").exit_code == 0


def test_verify_bind_skips_a_port_bound_outside_minnoctl(run, db):
    with socket.socket() as outsider:
        outsider.bind(("127.0.0.1", 41000))
        outsider.listen()
        result = run("ports", "allocate", "-p", "alpha", "-s", "vb", "-r", "ci", "--verify-bind", "--format", "plain")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip() == "41001" and "skipped port 41000" in result.stderr
        assert allocate(run, "plain") == 41002  # 41000 stays out of the pool for a while
        explicit = run("ports", "allocate", "-p", "beta", "-s", "e", "-r", "ci", "--port", "41000", "--verify-bind")
        assert explicit.exit_code in (ExitCode.PORT_TAKEN,) and "bound on this host" in one_error_line(explicit) \
            or "cools down" in explicit.stderr
    remote = run("ports", "allocate", "-p", "alpha", "-s", "r", "-r", "ci", "--verify-bind", "--hostname", "db.example")
    assert remote.exit_code == ExitCode.USAGE and "this host only" in one_error_line(remote)


def test_check_probes_this_hosts_ports_and_records_the_results(run, db):
    up = allocate(run, "up")
    down = allocate(run, "down")
    allocate(run, "elsewhere", "--hostname", "ci-runner-7")
    with socket.socket() as server:
        server.bind(("127.0.0.1", up))
        server.listen()
        result = run("ports", "check", "--format", "json")
    assert result.exit_code == 1  # one is down
    rows = {r["port"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {up, down}
    assert rows[up]["status"] == "healthy" and rows[down]["status"] == "unhealthy"
    with psycopg.connect(db) as conn:
        recorded = dict(conn.execute("SELECT a.port_number, h.status FROM supervisor.port_health_checks h JOIN "
                                     "supervisor.port_allocations a ON a.id = h.port_allocation_id").fetchall())
    assert recorded == {up: "healthy", down: "unhealthy"}


def test_port_is_an_alias_of_ports(run, db):
    result = run("port", "allocate", "-p", "alpha", "-s", "alias", "-r", "ci", "--format", "plain")
    assert result.exit_code == 0 and result.stdout.strip() == "41000"
    assert "alias" in run("port", "list").stdout


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("args, code, phrase", [
    (["allocate", "-p", "nope", "-s", "x", "-r", "ci"], ExitCode.NOT_FOUND,
     "unknown project 'nope' — the projects are: alpha, beta"),
    (["allocate", "-p", "alpha", "-s", "x", "-r", "nope"], ExitCode.NOT_FOUND, "unknown port range 'nope'"),
    (["allocate", "-p", "alpha", "-s", "x", "--service-type", "nosuchtype"], ExitCode.NOT_FOUND,
     "no active port range serves"),
    (["allocate", "-p", "alpha", "-s", "x", "-r", "ci", "--service-type", "api"], ExitCode.USAGE,
     "--range or --service-type"),
    (["allocate", "-p", "alpha", "-s", "x", "-r", "ci", "--port", "70000"], ExitCode.USAGE, "not a port number"),
    (["allocate", "-p", "alpha", "-s", "x", "-r", "ci", "--port", "0"], ExitCode.USAGE, "not a port number"),
    (["allocate", "-p", "alpha", "-s", "x", "-r", "ci", "--port", "41010"], ExitCode.USAGE,
     "outside range ci (41000-41009)"),
    (["allocate", "-p", "alpha", "-s", "x", "-r", "ci", "--protocol", "sctp"], ExitCode.USAGE, "not tcp or udp"),
    (["allocate", "-p", "alpha", "-s", "x", "-r", "ci", "--lease", "soon"], ExitCode.USAGE,
     "--lease 'soon' is not a duration"),
    (["allocate", "-p", "alpha", "-s", "x", "-r", "ci", "--lease", "0s"], ExitCode.USAGE, "more than zero"),
    (["reserve", "-p", "alpha", "-s", "x", "-r", "ci", "--ttl", "3 days"], ExitCode.USAGE,
     "--ttl '3 days' is not a duration"),
    (["release", "70000"], ExitCode.USAGE, "not a port number"),
    (["release"], ExitCode.USAGE, "say what to release"),
    (["release", "41000", "--protocol", "icmp"], ExitCode.USAGE, "not tcp or udp"),
    (["list", "--status", "lost"], ExitCode.USAGE, "--status 'lost'"),
    (["range", "add", "r", "--start", "5000", "--end", "4000"], ExitCode.USAGE, "--start 5000 is after --end 4000"),
    (["range", "add", "r", "--start", "0", "--end", "4000"], ExitCode.USAGE, "--start 0 is not a port number"),
    (["range", "add", "r", "--start", "41005", "--end", "41020"], ExitCode.USAGE, "overlaps range ci (41000-41009)"),
    (["range", "add", "ci", "--start", "60000", "--end", "60010"], ExitCode.USAGE, "named 'ci' already exists"),
    (["range", "add", "r", "--start", "60000", "--end", "60010", "--cooldown", "later"], ExitCode.USAGE, "--cooldown"),
    (["range", "disable", "nope"], ExitCode.NOT_FOUND, "unknown port range 'nope'"),
])
def test_bad_input_is_one_clear_line(run, db, args, code, phrase):
    before = active(db)
    result = run("ports", *args)
    assert result.exit_code == code, result.stderr
    assert phrase in one_error_line(result)
    assert active(db) == before


def test_no_range_given_with_several_ranges(run, db):
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO supervisor.port_ranges (range_name, start_port, end_port) VALUES ('b', 43000, 43009)")
    result = run("ports", "allocate", "-p", "alpha", "-s", "x")
    assert result.exit_code == ExitCode.USAGE and "say which range" in one_error_line(result)
