"""pg_dump, pg_restore and psql connect exactly as psycopg does (issue 18 item 3): PGPASSWORD, a
service file, a passfile, target_session_attrs, channel_binding, sslcrl and every other libpq keyword,
from one translation (connection.tool_connection). Real PostgreSQL 15 servers, the real tools."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import _need_pg15
from pgcluster import DEBIAN_PG15, PASSWORD, Cluster

from minnoctl.config import load_settings
from minnoctl.connection import connect_kwargs, for_tools
from minnoctl.errors import ConfigError

TOOLS = ("pg_dump", "pg_restore", "psql")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    """A primary (SSL, scram for pwuser, who may create databases) and a read-only server; each has
    pwuser's database pwdb with a table named after the server, so a dump says where it came from."""
    _need_pg15()
    primary = Cluster("primary", DEBIAN_PG15, tmp_path_factory.mktemp("primary"), ssl=True).start()
    readonly = Cluster("readonly", DEBIAN_PG15, tmp_path_factory.mktemp("readonly"), ssl=False).start()
    try:
        for cluster, table in ((primary, "on_the_primary"), (readonly, "on_the_readonly")):
            with psycopg.connect(**cluster.admin_params("pwdb"), autocommit=True) as conn:
                conn.execute("ALTER ROLE pwuser CREATEDB")
                conn.execute(f"CREATE TABLE {table} (n int)")
                conn.execute(f"ALTER TABLE {table} OWNER TO pwuser")
                conn.execute(f"INSERT INTO {table} SELECT generate_series(1, 3)")
        with psycopg.connect(**readonly.admin_params(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
        yield primary, readonly
    finally:
        primary.stop()
        readonly.stop()


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path]:
    """A MINNOCTL_PG_BINDIR of wrappers that log each tool's argv, one line a run, and run the tool."""
    folder, log = tmp_path / "bin", tmp_path / "argv.log"
    folder.mkdir()
    for name in TOOLS:
        wrapper = folder / name
        wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$0 $*" >> {log}\nexec {DEBIAN_PG15 / name} "$@"\n')
        wrapper.chmod(0o755)
    return folder, log


def url(cluster: Cluster, **query: str) -> str:
    return cluster.url("pwdb", "pwuser", **query)


def made(folder: Path) -> Path:
    folder.mkdir()
    return folder


def ok(result) -> None:
    assert result.exit_code == 0, result.stderr


def manifest_of(folder: Path) -> dict:
    (manifest,) = folder.glob("*.manifest.json")
    return json.loads(manifest.read_text())


def dumped_tables(folder: Path) -> set[str]:
    (dump,) = [p for p in folder.glob("minno-*") if not p.name.endswith(".manifest.json")]
    listing = subprocess.run([str(DEBIAN_PG15 / "pg_restore"), "--list", str(dump)], capture_output=True,
                             text=True, check=True).stdout
    return {line.split()[-2] for line in listing.splitlines() if " TABLE public " in line}


# -- PGPASSWORD: the setup the README recommends ---------------------------------------------------


def test_pgpassword_reaches_pg_dump_pg_restore_and_psql_and_no_password_is_in_their_argv(cli, servers, recorded,
                                                                                         tmp_path):
    """Before: `backup create` failed with "no password supplied" (PG* variables were stripped)."""
    primary, _ = servers
    bindir, log = recorded
    env = {"MINNO_DATABASE_URL": url(primary), "PGPASSWORD": PASSWORD, "MINNOCTL_PG_BINDIR": str(bindir)}
    ok(cli("db", "init", "--modules", "chatbot", "--yes", env=env))
    for fmt in ("custom", "plain"):  # restored by pg_restore, then by psql
        out = made(tmp_path / fmt)
        ok(cli("backup", "create", "--format", fmt, "-o", str(out), env=env))
        ok(cli("backup", "verify", "latest", "--restore-test", "-o", str(out), env=env))
        assert manifest_of(out)["rows"]["public.on_the_primary"] == 3
    runs = [line for line in log.read_text().splitlines() if not line.endswith(" --version")]
    assert {Path(line.split()[0]).name for line in runs} == set(TOOLS), runs
    assert all(PASSWORD not in line for line in runs)
    assert all("--dbname=" in line for line in runs if "--list" not in line)


# -- a service file, a passfile ----------------------------------------------------------------------


def test_a_service_file_names_the_server_for_the_tools_and_explicit_keywords_beat_it(cli, servers, tmp_path):
    """Before: PGSERVICE and PGSERVICEFILE were stripped, and pg_dump went to the default socket. The
    second case is the order psycopg follows: PGDATABASE, a keyword for minnoctl, beats the service
    file's dbname (as PG* variables the service file would have won, and pg_dump, in another
    database than the snapshot's, would have failed)."""
    primary, _ = servers
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[minno]\nhost=127.0.0.1\nport={primary.port}\ndbname=pwdb\nuser=pwuser\npassword={PASSWORD}\n"
                        f"[elsewhere]\nhost=127.0.0.1\nport={primary.port}\ndbname=postgres\nuser=pwuser\n"
                        f"password={PASSWORD}\n")
    for name, extra in (("minno", {}), ("elsewhere", {"PGDATABASE": "pwdb"})):
        out = made(tmp_path / name)
        ok(cli("backup", "create", "-o", str(out), env={"PGSERVICEFILE": str(services), "PGSERVICE": name, **extra}))
        assert manifest_of(out)["database"] == "pwdb"
        assert "on_the_primary" in dumped_tables(out)


def test_a_passfile_in_the_url_or_in_pgpassfile(cli, servers, tmp_path):
    """Before: PGPASSFILE was stripped (the URL's passfile keyword did reach pg_dump)."""
    primary, _ = servers
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{primary.port}:*:pwuser:{PASSWORD.replace(':', chr(92) + ':')}\n")
    passfile.chmod(0o600)
    for name, env in (("keyword", {"MINNO_DATABASE_URL": url(primary, passfile=str(passfile))}),
                      ("variable", {"MINNO_DATABASE_URL": url(primary), "PGPASSFILE": str(passfile)})):
        out = made(tmp_path / name)
        ok(cli("backup", "create", "-o", str(out), env=env))
        ok(cli("backup", "verify", "latest", "--restore-test", "-o", str(out), env=env))


# -- target_session_attrs ----------------------------------------------------------------------------


def test_a_two_host_url_with_target_session_attrs_dumps_the_primary(cli, servers, tmp_path):
    """Before: pg_dump took the first host, the read-only server, where minnoctl's snapshot does not
    exist; now it dumps the primary's table. The restore test's pg_restore goes where psycopg made
    the scratch database: libpq alone would stop at the read-only server, which has no such
    database, where psycopg moves on to the next host."""
    primary, readonly = servers
    two_hosts = (f"postgresql://pwuser@127.0.0.1:{readonly.port},127.0.0.1:{primary.port}/pwdb"
                 "?target_session_attrs=read-write")
    env = {"MINNO_DATABASE_URL": two_hosts, "PGPASSWORD": PASSWORD}
    settings = load_settings(env=env)
    with psycopg.connect(**connect_kwargs(settings, settings.params), password=PASSWORD) as conn:
        assert conn.info.port == primary.port
    ok(cli("backup", "create", "-o", str(tmp_path), env=env))
    tables = dumped_tables(tmp_path)
    assert "on_the_primary" in tables and "on_the_readonly" not in tables
    ok(cli("backup", "verify", "latest", "--restore-test", "-o", str(tmp_path), env=env))


# -- channel_binding, sslcrl: the same keyword, the same outcome, for psycopg and each tool -----------


def _unrelated_crl(path: Path) -> Path:
    """A valid CRL from a CA that signed nothing here: with it libpq checks revocation, finds no CRL
    for the server's CA, and refuses the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unrelated CA")]))
           .last_update(now - dt.timedelta(days=1)).next_update(now + dt.timedelta(days=30))
           .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()))
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return path


def _outcome_of_tools(settings, archive: Path) -> dict[str, str]:
    connection = for_tools(connect_kwargs(settings, settings.params), settings.source)
    commands = {
        "psql": ["--no-psqlrc", "-At", "-c", "SELECT 1"],
        "pg_dump": ["--schema-only", "--table=on_the_primary"],
        "pg_restore": ["--single-transaction", "--exit-on-error", str(archive)],
    }
    outcomes = {}
    for tool, args in commands.items():
        proc = subprocess.run([str(DEBIAN_PG15 / tool), "--no-password", connection.dbname_option, *args],
                              env=connection.env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        outcomes[tool] = "ok" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1].split("failed: ")[-1]
        assert PASSWORD not in proc.stderr
    return outcomes


def test_channel_binding_and_sslcrl_reach_every_tool_as_they_reach_psycopg(servers, tmp_path, monkeypatch):
    """Before: channel_binding and sslcrl were dropped, so each tool connected where psycopg refused.
    (tool_connection pins this translation to the server psycopg reached, which it cannot reach here.)"""
    primary, _ = servers
    archive = tmp_path / "empty.dump"
    empty = f"empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**primary.admin_params(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {empty}")
    subprocess.run([str(DEBIAN_PG15 / "pg_dump"), "-Fc", f"--file={archive}", f"--dbname=port={primary.port} "
                    f"host=127.0.0.1 user=postgres dbname={empty}"], check=True, env={"LC_ALL": "C"})
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    cases = {
        "channel binding over SSL": ({"sslmode": "require", "channel_binding": "require"}, "ok"),
        "channel binding without SSL": ({"sslmode": "disable", "channel_binding": "require"},
                                        "channel binding required, but SSL not in use"),
        "a CRL without the server's CA": ({"sslmode": "verify-ca", "sslrootcert": str(primary.certs.ca),
                                           "sslcrl": str(_unrelated_crl(tmp_path / "crl.pem"))},
                                          "SSL error: certificate verify failed"),
    }
    for case, (query, expected) in cases.items():
        settings = load_settings(env={"MINNO_DATABASE_URL": url(primary, **query)})
        try:
            psycopg.connect(**connect_kwargs(settings, settings.params)).close()
            by_psycopg = "ok"
        except psycopg.OperationalError as exc:
            by_psycopg = str(exc).strip().splitlines()[-1].split("failed: ")[-1]
        assert by_psycopg == expected, case
        assert _outcome_of_tools(settings, archive) == dict.fromkeys(TOOLS, expected), case


def test_backup_create_refused_by_libpq_is_one_line_without_the_password(cli, servers, tmp_path):
    primary, _ = servers
    result = cli("backup", "create", "-o", str(tmp_path),
                 env={"MINNO_DATABASE_URL": url(primary, sslmode="disable", channel_binding="require"),
                      "PGPASSWORD": PASSWORD})
    assert result.exit_code != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "channel binding required" in lines[0], result.stderr
    assert PASSWORD not in result.stderr + result.stdout and "Traceback" not in result.stderr


# -- the translation: every libpq keyword --------------------------------------------------------------


VALID = {"port": "5433", "connect_timeout": "7", "sslmode": "require"}  # values minnoctl's settings check


def test_the_translation_covers_every_keyword_libpq_knows(monkeypatch):
    """Each keyword of psycopg's libpq (its own list, with the variable for each) reaches the tools as
    it reaches psycopg: in their conninfo, or (libpq's hidden ones) in their variable, never in argv;
    a hidden one without a variable is refused in one line that does not show it. The process
    environment is kept as libpq sees it, and a keyword beats the variable it inherits."""
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict

    monkeypatch.setenv("PGPASSWORD", "inherited-password")
    monkeypatch.setenv("PGSSLCRL", "/inherited/crl.pem")
    seen = 0
    for option in pq.Conninfo.get_defaults():
        keyword, envvar = option.keyword.decode(), option.envvar and option.envvar.decode()
        value = VALID.get(keyword, f"value-of-{keyword}-{uuid.uuid4().hex[:6]}")
        raw = f"postgresql://someone@db.example:5432/minno?{keyword}={value}"
        settings = load_settings(env={"MINNO_DATABASE_URL": raw})
        kwargs = connect_kwargs(settings, settings.params, dbname="other")
        hidden = option.dispchar in (b"*", b"D")
        if hidden and not envvar:
            with pytest.raises(ConfigError) as refused:
                for_tools(kwargs, settings.source)
            assert keyword in refused.value.message and value not in refused.value.message
            assert "\n" not in refused.value.message
            continue
        connection = for_tools(kwargs, settings.source)
        given = conninfo_to_dict(connection.conninfo)
        assert value not in connection.conninfo if hidden else given[keyword] == kwargs[keyword], keyword
        if hidden:
            assert connection.env[envvar] == value, keyword
        assert {**given, **({keyword: connection.env[envvar]} if hidden else {})} == kwargs, keyword
        assert connection.env["PGSSLCRL"] == "/inherited/crl.pem" and connection.env["LC_ALL"] == "C"
        seen += 1
    assert seen > 30
