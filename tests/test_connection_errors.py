"""Every bad connection input, against a real server: one line on stderr, the documented exit code,
no traceback, never the password."""

from __future__ import annotations

import socket

import pytest

from minnoctl.config import load_settings
from minnoctl.connection import connect
from minnoctl.errors import ConfigError, ConnectError, ExitCode
from pgcluster import PASSWORD, free_port


def assert_one_clean_line(result, secret: str = PASSWORD) -> str:
    assert "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert secret not in result.stdout + result.stderr
    assert lines[0].startswith("minnoctl: error: ")
    return lines[0]


def classify_env(env: dict[str, str]) -> ConnectError:
    settings = load_settings(env=env)
    with pytest.raises(ConnectError) as info:
        connect(settings).close()
    assert PASSWORD not in info.value.message
    return info.value


@pytest.fixture
def blackhole():
    """A TCP port that completes the handshake but never answers (listen backlog, no accept)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def cases(pg15, pg18tcp, blackhole_port):
    certs = pg15.certs
    return {
        "refused": ({"MINNO_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"},
                    ExitCode.UNREACHABLE, "connection refused"),
        "unknown-host": ({"MINNO_DATABASE_URL": "postgresql://postgres@no-such-host.invalid:5432/x"},
                         ExitCode.UNREACHABLE, "unknown host 'no-such-host.invalid'"),
        "timeout": ({"MINNO_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{blackhole_port}/x",
                     "DB_CONNECTION_TIMEOUT": "2000"}, ExitCode.UNREACHABLE, "no answer from"),
        "wrong-password": ({"MINNO_DATABASE_URL": pg18tcp.url("pwdb", "pwuser", "not-" + PASSWORD)},
                           ExitCode.AUTH, "password authentication failed for user 'pwuser'"),
        "no-password": ({"MINNO_DATABASE_URL": pg18tcp.url("pwdb", "pwuser")},
                        ExitCode.AUTH, "asks a password for user 'pwuser' and none was given"),
        "no-database": ({"MINNO_DATABASE_URL": pg18tcp.url("nosuchdb")},
                        ExitCode.NO_DATABASE, "database 'nosuchdb' does not exist"),
        "no-role": ({"MINNO_DATABASE_URL": pg18tcp.url("postgres", "ghost")},
                    ExitCode.AUTH, "role 'ghost' does not exist"),
        "ssl-unsupported": ({"MINNO_DATABASE_URL": pg18tcp.url("postgres"), "DB_SSL_MODE": "require"},
                            ExitCode.UNREACHABLE, "the server does not support it"),
        "ssl-required": ({"MINNO_DATABASE_URL": pg15.url("sslonly"), "DB_SSL_MODE": "disable"},
                         ExitCode.AUTH, "refuses connections without SSL"),
        "ssl-verify": ({"MINNO_DATABASE_URL": pg15.url("postgres"), "DB_SSL_MODE": "verify-full",
                        "DB_SSL_CA": str(certs.other_ca)}, ExitCode.UNREACHABLE, "could not be verified"),
        "client-cert": ({"MINNO_DATABASE_URL": pg15.url("certdb", "certuser"), "DB_SSL_MODE": "require"},
                        ExitCode.AUTH, "client certificate"),
    }


KINDS = ["refused", "unknown-host", "timeout", "wrong-password", "no-password", "no-database", "no-role",
         "ssl-unsupported", "ssl-required", "ssl-verify", "client-cert"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_bad_connection_is_classified(kind, pg15, pg18tcp, blackhole):
    env, code, phrase = cases(pg15, pg18tcp, blackhole)[kind]
    err = classify_env(env)
    assert err.kind == kind
    assert err.exit_code == code
    assert phrase in err.message
    assert "\n" not in err.message


@pytest.mark.parametrize("kind", KINDS)
def test_health_live_reports_one_line_and_exits_critical(kind, cli, pg15, pg18tcp, blackhole):
    env, _, phrase = cases(pg15, pg18tcp, blackhole)[kind]
    result = cli("health", "--live", env=env)
    assert result.exit_code == 2
    line = assert_one_clean_line(result)
    assert phrase in line
    assert result.stdout == ""


def test_wrong_password_in_a_real_process_shows_no_traceback_or_password(run_minnoctl, pg15):
    result = run_minnoctl("health", "--live", env={"DATABASE_URL": pg15.url("pwdb", "pwuser", "wrong-" + PASSWORD)})
    assert result.returncode == 2
    line = assert_one_clean_line(result, secret="wrong-" + PASSWORD)
    assert "pwuser:****@127.0.0.1" in line
    assert "(from DATABASE_URL)" in line


def test_json_document_on_stdout_when_down(cli):
    import json

    result = cli("health", "--live", "--format", "json",
                 env={"MINNO_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"})
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["status"] == "CRITICAL"
    assert doc["checks"][0]["name"] == "connection" and doc["checks"][0]["value"] == "refused"


@pytest.mark.parametrize("url, phrase", [
    ("mysql://app:hunter2hunter2@db:3306/minno", "scheme 'mysql'"),
    ("postgresql://app:hunter2hunter2@db:notaport/minno", "port 'notaport'"),
    ("postgresql://app:hunter2hunter2@db:99999/minno", "port '99999'"),
    ("postgresql://app:hunter2hunter2@db/minno?sslmode=sometimes", "sslmode 'sometimes'"),
    ("postgresql://app:hunter2hunter2@db/minno?nosuchoption=1", "not a valid PostgreSQL URL"),
    ("host=db password=hunter2hunter2 port", "not a valid PostgreSQL URL"),
])
def test_invalid_url_is_one_line_config_error_without_password(cli, url, phrase):
    with pytest.raises(ConfigError):
        load_settings(env={"MINNO_DATABASE_URL": url})
    result = cli("health", "--live", env={"MINNO_DATABASE_URL": url})
    assert result.exit_code == ExitCode.CONFIG
    line = assert_one_clean_line(result, secret="hunter2hunter2")
    assert phrase in line


def test_password_given_in_argv_is_warned_about_and_never_printed(cli, pg18tcp):
    result = cli("--database-url", pg18tcp.url("pwdb", "pwuser", "wrong-" + PASSWORD), "health", "--live")
    assert result.exit_code == 2
    assert "visible to other users" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout


def test_traceback_flag_shows_a_traceback_for_user_errors(cli):
    env = {"MINNO_DATABASE_URL": "mysql://app:hunter2hunter2@db/minno"}
    result = cli("--traceback", "config", "show", env=env)
    assert result.exit_code == ExitCode.CONFIG
    assert "Traceback" in result.stderr
    assert "hunter2hunter2" not in result.stderr
    assert "Traceback" not in cli("config", "show", env=env).stderr


def test_ssl_verify_full_with_the_right_ca_and_client_certificates_connect(pg15):
    certs = pg15.certs
    env = {"MINNO_DATABASE_URL": pg15.url("postgres"), "DB_SSL_MODE": "verify-full", "DB_SSL_CA": str(certs.ca)}
    with connect(load_settings(env=env)) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True
    env = {"MINNO_DATABASE_URL": pg15.url("certdb", "certuser"), "DB_SSL_MODE": "verify-full",
           "DB_SSL_CA": str(certs.ca), "DB_SSL_CERT": str(certs.client_crt), "DB_SSL_KEY": str(certs.client_key)}
    with connect(load_settings(env=env)) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "certuser"


def test_passwords_from_db_components_and_libpq_variables_authenticate_with_scram(pg15, pg18tcp):
    for cluster in (pg15, pg18tcp):
        for env in (
            {"DB_HOST": "127.0.0.1", "DB_PORT": str(cluster.port), "DB_NAME": "pwdb", "DB_USER": "pwuser",
             "DB_PASSWORD": PASSWORD, "DB_SSL_MODE": "disable"},
            {"PGHOST": "127.0.0.1", "PGPORT": str(cluster.port), "PGDATABASE": "pwdb", "PGUSER": "pwuser",
             "PGPASSWORD": PASSWORD},
        ):
            with connect(load_settings(env=env)) as conn:
                assert conn.execute("SELECT current_user").fetchone()[0] == "pwuser"


def test_connection_is_pgbouncer_safe_and_named(database):
    from minnoctl.config import load_settings as load

    with connect(load(env={"MINNO_DATABASE_URL": database})) as conn:
        assert conn.prepare_threshold is None  # no server-side prepared statements
        assert conn.execute("SHOW application_name").fetchone()[0] == "minnoctl"
        for _ in range(10):
            conn.execute("SELECT %s::int", (1,))
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0


def test_timeouts_reach_the_server(database):
    env = {"MINNO_DATABASE_URL": database, "DB_STATEMENT_TIMEOUT": "1500", "DB_IDLE_TIMEOUT": "5min"}
    with connect(load_settings(env=env)) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "1500ms"
        assert conn.execute("SHOW idle_session_timeout").fetchone()[0] == "5min"
        import psycopg

        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(5)")


def test_a_read_only_server_is_one_line_not_a_traceback(cli, migrated):
    """A standby, or a database set read-only: the server refuses the write; minnoctl says so."""
    import psycopg

    with psycopg.connect(migrated, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    result = cli("ports", "range", "add", "ro", "--start", "41000", "--end", "41010",
                 env={"MINNO_DATABASE_URL": migrated})
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "the server is read-only" in result.stderr and "point it at the primary" in result.stderr
