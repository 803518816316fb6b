"""`health --live` against servers minnoctl did and did not start, on PostgreSQL 18 and 15, and the
yoyo URL the connection module derives."""

from __future__ import annotations

import json

import pytest

from minnoctl.config import load_settings
from minnoctl.connection import yoyo_url
from pgcluster import PASSWORD


def test_health_live_on_the_embedded_default(cli):
    result = cli("health", "--live", "--format", "json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "OK"
    names = [c["name"] for c in doc["checks"]]
    assert names == ["connection", "server_version"]
    assert doc["checks"][1]["value"].startswith("PostgreSQL 18")


@pytest.mark.parametrize("fmt", ["table", "csv", "plain", "github"])
def test_health_live_on_each_server_by_url(cli, database, fmt):
    result = cli("health", "--live", "--format", fmt, env={"MINNO_DATABASE_URL": database})
    assert result.exit_code == 0, result.stderr
    assert "server_version" in result.stdout and "PostgreSQL 1" in result.stdout
    assert "embedded" not in result.stderr  # a configured server never starts the embedded one


def test_health_live_with_a_password_over_tcp(cli, pg15, pg18tcp):
    for cluster, major in ((pg15, "15"), (pg18tcp, "18")):
        result = cli("health", "--live", "--format", "nagios",
                     env={"DATABASE_URL": cluster.url("pwdb", "pwuser", PASSWORD)})
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("MINNOCTL OK - ")
        assert "rtt_ms=" in result.stdout
        assert PASSWORD not in result.stdout + result.stderr
        verbose = cli("health", "--live", "--format", "json",
                      env={"DATABASE_URL": cluster.url("pwdb", "pwuser", PASSWORD)})
        assert json.loads(verbose.stdout)["checks"][1]["value"].startswith(f"PostgreSQL {major}")


def test_yoyo_url_selects_psycopg3_and_connects_over_tcp_with_a_special_password(pg15, pg18tcp):
    from yoyo import get_backend

    for cluster in (pg15, pg18tcp):
        settings = load_settings(env={"DATABASE_URL": cluster.url("pwdb", "pwuser", PASSWORD)})
        url = yoyo_url(settings)
        assert url.startswith("postgresql+psycopg://pwuser:")
        backend = get_backend(url)
        assert type(backend).__name__ == "PostgresqlPsycopgBackend"
        assert backend.execute("SELECT current_user").fetchone()[0] == "pwuser"
        assert backend.execute("SHOW application_name").fetchone()[0] == "minnoctl"
        backend.connection.close()


def test_yoyo_url_connects_over_the_embedded_unix_socket(server):
    from yoyo import get_backend

    settings = load_settings(env={})
    assert settings.embedded
    url = yoyo_url(settings)
    assert "host=%2F" in url  # the socket directory travels as a query argument
    backend = get_backend(url)
    assert backend.execute("SELECT current_database()").fetchone()[0] == "minno"
    backend.connection.close()


def test_quiet_silences_the_embedded_note_but_not_errors(run_minnoctl):
    quiet = run_minnoctl("--quiet", "health", "--live")
    assert quiet.returncode == 0
    assert quiet.stderr == ""
    loud = run_minnoctl("health", "--live")
    assert "the embedded PostgreSQL" in loud.stderr
    failing = run_minnoctl("-q", "health", "--live", env={"MINNO_DATABASE_URL": "mysql://x@y/z"})
    assert failing.returncode == 3 and failing.stderr.startswith("minnoctl: error: ")
