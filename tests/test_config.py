"""config.load_settings: where the database comes from, .env files, SSL, durations, URLs, masking.

Pure tests: every call passes its own `env` and `cwd`, nothing connects."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from minnoctl import config
from minnoctl.config import display_url, load_settings, read_env_file, scrub
from minnoctl.errors import ConfigError, ExitCode

SECRET = "Zebra-Quokka-7391"  # distinctive: any occurrence in a message is a leak


def load(tmp_path: Path, env: dict[str, str] | None = None, database_url: str | None = None,
         dotenv: str | None = None) -> config.Settings:
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    return load_settings(database_url, env=env or {}, cwd=tmp_path)


def config_error(tmp_path: Path, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **kwargs)
    assert info.value.exit_code == ExitCode.CONFIG
    assert "\n" not in str(info.value)
    return info.value


# ---------------------------------------------------------------------------------------------
# Precedence: each source beats the next one


# name -> (env, --database-url, expected source, expected params)
SOURCES: dict[str, tuple[dict[str, str], str | None, str, dict[str, str]]] = {
    "--database-url": ({}, "postgresql://argu@arghost:5001/argdb", "--database-url",
                       {"user": "argu", "host": "arghost", "port": "5001", "dbname": "argdb"}),
    "MINNO_DATABASE_URL": ({"MINNO_DATABASE_URL": "postgresql://mu@mhost:5002/mdb"}, None, "MINNO_DATABASE_URL",
                           {"user": "mu", "host": "mhost", "port": "5002", "dbname": "mdb"}),
    "DATABASE_URL": ({"DATABASE_URL": "postgres://du@dhost:5003/ddb"}, None, "DATABASE_URL",
                     {"user": "du", "host": "dhost", "port": "5003", "dbname": "ddb"}),
    "POSTGRES_URL": ({"POSTGRES_URL": "postgresql://pu@phost:5004/pdb"}, None, "POSTGRES_URL",
                     {"user": "pu", "host": "phost", "port": "5004", "dbname": "pdb"}),
    "RAILWAY_DATABASE_URL": ({"RAILWAY_DATABASE_URL": "postgresql://ru@rhost:5005/rdb"}, None,
                             "RAILWAY_DATABASE_URL", {"user": "ru", "host": "rhost", "port": "5005", "dbname": "rdb"}),
    "DB_*": ({"DB_HOST": "dbhost", "DB_PORT": "5006", "DB_NAME": "dbdb", "DB_USER": "dbuser", "DB_PASSWORD": SECRET},
             None, "DB_HOST, DB_PORT, DB_NAME, DB_USER",
             {"host": "dbhost", "port": "5006", "dbname": "dbdb", "user": "dbuser", "password": SECRET}),
    "PG*": ({"PGHOST": "pghost", "PGPORT": "5007", "PGDATABASE": "pgdb", "PGUSER": "pguser", "PGPASSWORD": SECRET,
             "PGSERVICE": "pgsvc"}, None, "PGHOST, PGPORT, PGDATABASE, PGUSER, PGSERVICE",
            {"host": "pghost", "port": "5007", "dbname": "pgdb", "user": "pguser", "password": SECRET,
             "service": "pgsvc"}),
}
ORDER = [*SOURCES, ".env", "embedded"]
DOTENV = "MINNO_DATABASE_URL=postgresql://fu@filehost:5008/fdb\n"  # the strongest variable, but in .env
DOTENV_PARAMS = {"user": "fu", "host": "filehost", "port": "5008", "dbname": "fdb"}


def _arrange(name: str, tmp_path: Path, env: dict[str, str]) -> str | None:
    """Put source `name` in place (env updated in place); return its --database-url, if any."""
    if name == ".env":
        (tmp_path / ".env").write_text(DOTENV)
        return None
    if name == "embedded":
        return None
    source_env, url, _, _ = SOURCES[name]
    env.update(source_env)
    return url


def _expected(name: str) -> tuple[str, dict[str, str]]:
    if name == ".env":
        return ".env: MINNO_DATABASE_URL", DOTENV_PARAMS
    if name == "embedded":
        return "embedded", {}
    return SOURCES[name][2], SOURCES[name][3]


@pytest.mark.parametrize("higher, lower", list(zip(ORDER, ORDER[1:])), ids=lambda n: n)
def test_each_source_beats_the_next(tmp_path, higher, lower):
    env: dict[str, str] = {}
    url_low = _arrange(lower, tmp_path, env)
    url_high = _arrange(higher, tmp_path, env)
    settings = load_settings(url_high or url_low, env=env, cwd=tmp_path)
    source, params = _expected(higher)
    assert settings.source == source
    assert settings.params == params
    assert settings.embedded is (higher == "embedded")


@pytest.mark.parametrize("name", ORDER)
def test_each_source_alone(tmp_path, name):
    env: dict[str, str] = {}
    url = _arrange(name, tmp_path, env)
    settings = load_settings(url, env=env, cwd=tmp_path)
    source, params = _expected(name)
    assert settings.source == source
    assert settings.params == params
    assert settings.embedded is (name == "embedded")
    assert "PASSWORD" not in settings.source


def test_the_whole_chain_at_once_picks_the_argument(tmp_path):
    env: dict[str, str] = {}
    for name in ORDER:
        _arrange(name, tmp_path, env)
    settings = load_settings(SOURCES["--database-url"][1], env=env, cwd=tmp_path)
    assert settings.source == "--database-url"
    settings = load_settings(None, env=env, cwd=tmp_path)
    assert settings.source == "MINNO_DATABASE_URL"


def test_inside_env_file_the_same_order_holds(tmp_path):
    dotenv = ("PGHOST=pgfile\nDB_HOST=dbfile\nRAILWAY_DATABASE_URL=postgresql://r@railfile/r\n"
              "DATABASE_URL=postgresql://d@dfile/d\n")
    settings = load(tmp_path, dotenv=dotenv)
    assert settings.source == ".env: DATABASE_URL"
    assert settings.params["host"] == "dfile"
    settings = load(tmp_path, dotenv="PGHOST=pgfile\nDB_HOST=dbfile\n")
    assert settings.source == ".env: DB_HOST"
    assert settings.params == {"host": "dbfile"}


def test_embedded_default(tmp_path):
    settings = load(tmp_path)
    assert settings.embedded is True
    assert settings.source == "embedded"
    assert settings.params == {}
    assert settings.secrets() == []


def test_pgpassword_alone_does_not_select_a_server(tmp_path):
    # a password is not a database: PGPASSWORD alone still means the embedded server
    assert load(tmp_path, env={"PGPASSWORD": SECRET}).source == "embedded"


# ---------------------------------------------------------------------------------------------
# The real environment beats .env, variable by variable


def _touch(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


ENV_VS_FILE = [
    # variable, value in env, value in .env, check(settings) -> the value used
    ("MINNO_DATABASE_URL", "postgresql://envu@envhost/envdb", "postgresql://fileu@filehost/filedb",
     lambda s: s.params["host"]),
    ("DATABASE_URL", "postgresql://envu@envhost/envdb", "postgresql://fileu@filehost/filedb",
     lambda s: s.params["host"]),
    ("POSTGRES_URL", "postgresql://envu@envhost/envdb", "postgresql://fileu@filehost/filedb",
     lambda s: s.params["host"]),
    ("RAILWAY_DATABASE_URL", "postgresql://envu@envhost/envdb", "postgresql://fileu@filehost/filedb",
     lambda s: s.params["host"]),
    ("DB_HOST", "envhost", "filehost", lambda s: s.params["host"]),
    ("PGHOST", "envhost", "filehost", lambda s: s.params["host"]),
    ("DB_POOL_SIZE", "3", "7", lambda s: s.pool_size),
    ("DB_CONNECTION_TIMEOUT", "30s", "5s", lambda s: s.connect_timeout_s),
    ("DB_STATEMENT_TIMEOUT", "1500", "2500", lambda s: s.statement_timeout_ms),
    ("DB_QUERY_TIMEOUT", "1500", "2500", lambda s: s.statement_timeout_ms),
    ("DB_IDLE_TIMEOUT", "1min", "2min", lambda s: s.idle_timeout_ms),
    ("DB_SSL_MODE", "verify-full", "disable", lambda s: s.params["sslmode"]),
    ("DB_SSL_ENABLED", "true", "false", lambda s: s.params["sslmode"]),
    ("MINNO_HOME", "/env/home", "/file/home", lambda s: s.minno_home),
]
ENV_WINS = {"MINNO_DATABASE_URL": "envhost", "DATABASE_URL": "envhost", "POSTGRES_URL": "envhost",
            "RAILWAY_DATABASE_URL": "envhost", "DB_HOST": "envhost", "PGHOST": "envhost", "DB_POOL_SIZE": 3,
            "DB_CONNECTION_TIMEOUT": 30, "DB_STATEMENT_TIMEOUT": 1500, "DB_QUERY_TIMEOUT": 1500,
            "DB_IDLE_TIMEOUT": 60_000, "DB_SSL_MODE": "verify-full", "DB_SSL_ENABLED": "require",
            "MINNO_HOME": Path("/env/home")}
FILE_ONLY = {"MINNO_DATABASE_URL": "filehost", "DATABASE_URL": "filehost", "POSTGRES_URL": "filehost",
             "RAILWAY_DATABASE_URL": "filehost", "DB_HOST": "filehost", "PGHOST": "filehost", "DB_POOL_SIZE": 7,
             "DB_CONNECTION_TIMEOUT": 5, "DB_STATEMENT_TIMEOUT": 2500, "DB_QUERY_TIMEOUT": 2500,
             "DB_IDLE_TIMEOUT": 120_000, "DB_SSL_MODE": "disable", "DB_SSL_ENABLED": "disable",
             "MINNO_HOME": Path("/file/home")}


@pytest.mark.parametrize("var, in_env, in_file, used", ENV_VS_FILE, ids=[c[0] for c in ENV_VS_FILE])
def test_environment_beats_env_file_for_every_variable(tmp_path, var, in_env, in_file, used):
    base = {} if var in config.URL_VARS or var in ("DB_HOST", "PGHOST") else {"DB_HOST": "h"}
    (tmp_path / ".env").write_text(f"{var}={in_file}\n")
    settings = load_settings(env={**base, var: in_env}, cwd=tmp_path)
    assert used(settings) == ENV_WINS[var]
    # and the file is used when the environment does not have the variable
    settings = load_settings(env=base, cwd=tmp_path)
    assert used(settings) == FILE_ONLY[var]


@pytest.mark.parametrize("var", ["DB_SSL_CA", "DB_SSL_CERT", "DB_SSL_KEY"])
def test_environment_beats_env_file_for_certificate_paths(tmp_path, var):
    keyword = {"DB_SSL_CA": "sslrootcert", "DB_SSL_CERT": "sslcert", "DB_SSL_KEY": "sslkey"}[var]
    env_file, dot_file = _touch(tmp_path, "env.pem"), _touch(tmp_path, "dot.pem")
    (tmp_path / ".env").write_text(f"{var}={dot_file}\n")
    settings = load_settings(env={"DB_HOST": "h", var: env_file}, cwd=tmp_path)
    assert settings.params[keyword] == env_file
    assert settings.values[keyword].source == var
    settings = load_settings(env={"DB_HOST": "h"}, cwd=tmp_path)
    assert settings.params[keyword] == dot_file
    assert settings.values[keyword].source == f".env: {var}"


def test_pool_size_sources_are_reported(tmp_path):
    (tmp_path / ".env").write_text("DB_POOL_SIZE=7\n")
    assert load_settings(env={"DB_POOL_SIZE": "3"}, cwd=tmp_path).values["pool_size"] == config.Value(3, "DB_POOL_SIZE")
    assert load_settings(env={}, cwd=tmp_path).values["pool_size"] == config.Value(7, ".env: DB_POOL_SIZE")


def test_empty_environment_value_falls_through_to_env_file(tmp_path):
    (tmp_path / ".env").write_text("DB_POOL_SIZE=7\n")
    assert load_settings(env={"DB_POOL_SIZE": ""}, cwd=tmp_path).pool_size == 7


# ---------------------------------------------------------------------------------------------
# .env parsing


def test_env_file_syntax(tmp_path):
    (tmp_path / ".env").write_text(
        "# a comment line\n"
        "\n"
        "   \n"
        "export DB_HOST=filehost\n"
        'DB_PORT="5433"\n'
        "DB_NAME='my db'\n"
        "DB_USER=app   # a trailing comment\n"
        "DB_PASSWORD=abc#123\n"
        "  DB_POOL_SIZE = 4  \n"
        "MINNO_HOME=\"/path with spaces/# not a comment\"\n"
        "EMPTY=\n"
        "QUOTED_HASH='#x'  # comment\n"
    )
    values = read_env_file(tmp_path / ".env")
    assert values == {
        "DB_HOST": "filehost",
        "DB_PORT": "5433",
        "DB_NAME": "my db",
        "DB_USER": "app",
        "DB_PASSWORD": "abc#123",
        "DB_POOL_SIZE": "4",
        "MINNO_HOME": "/path with spaces/# not a comment",
        "EMPTY": "",
        "QUOTED_HASH": "#x",
    }
    settings = load_settings(env={}, cwd=tmp_path)
    assert settings.params == {"host": "filehost", "port": "5433", "dbname": "my db", "user": "app",
                               "password": "abc#123"}
    assert settings.source == ".env: DB_HOST, .env: DB_PORT, .env: DB_NAME, .env: DB_USER"
    assert settings.pool_size == 4


def test_missing_env_file_is_no_error(tmp_path):
    assert read_env_file(tmp_path / ".env") == {}


def test_env_file_is_read_from_cwd_only(tmp_path):
    (tmp_path / ".env").write_text("DB_HOST=parent\n")
    child = tmp_path / "child"
    child.mkdir()
    assert load_settings(env={}, cwd=child).embedded is True
    assert load_settings(env={}, cwd=tmp_path).params == {"host": "parent"}


@pytest.mark.parametrize("line", ["this is not an assignment", "1BAD=x", "=value", "export"])
def test_malformed_env_line_names_file_and_line(tmp_path, line):
    path = tmp_path / ".env"
    path.write_text(f"# ok\nDB_HOST=h\n{line}\nDB_PORT=5432\n")
    err = config_error(tmp_path)
    assert str(path) in str(err)
    assert "line 3" in str(err)


def test_unbalanced_quotes_in_env_file(tmp_path):
    path = tmp_path / ".env"
    path.write_text(f"DB_HOST=h\nDB_PASSWORD='{SECRET}\n")
    err = config_error(tmp_path)
    assert str(path) in str(err) and "line 2" in str(err)
    assert "DB_PASSWORD" in str(err)
    assert SECRET not in str(err)


# ---------------------------------------------------------------------------------------------
# DB_* components and SSL


@pytest.mark.parametrize("env, params, source", [
    ({"DB_HOST": "h"}, {"host": "h"}, "DB_HOST"),
    ({"DB_NAME": "d", "DB_USER": "u"}, {"dbname": "d", "user": "u"}, "DB_NAME, DB_USER"),
    ({"DB_PORT": "6543"}, {"port": "6543"}, "DB_PORT"),
    ({"DB_HOST": "/var/run/postgresql", "DB_PASSWORD": SECRET}, {"host": "/var/run/postgresql", "password": SECRET},
     "DB_HOST"),
])
def test_db_components_fill_only_what_is_set(tmp_path, env, params, source):
    settings = load(tmp_path, env=env)
    assert settings.params == params
    assert settings.source == source
    assert settings.embedded is False


def test_db_port_is_checked(tmp_path):
    err = config_error(tmp_path, env={"DB_HOST": "h", "DB_PORT": "54x32", "DB_PASSWORD": SECRET})
    assert "54x32" in str(err) and "DB_HOST, DB_PORT" in str(err)
    assert SECRET not in str(err)


@pytest.mark.parametrize("mode", config.SSL_MODES)
def test_db_ssl_mode_values(tmp_path, mode):
    settings = load(tmp_path, env={"DB_HOST": "h", "DB_SSL_MODE": mode.upper()})
    assert settings.params["sslmode"] == mode
    assert settings.values["sslmode"] == config.Value(mode, "DB_SSL_MODE")


def test_bad_db_ssl_mode_lists_the_valid_modes(tmp_path):
    err = config_error(tmp_path, env={"DB_HOST": "h", "DB_SSL_MODE": "sometimes"})
    assert "DB_SSL_MODE" in str(err) and "sometimes" in str(err)
    for mode in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        assert mode in str(err)


@pytest.mark.parametrize("enabled, reject, mode", [
    ("true", None, "require"),
    ("true", "true", "verify-full"),
    ("true", "false", "require"),
    ("1", "yes", "verify-full"),
    ("false", None, "disable"),
    ("false", "true", "disable"),
])
def test_spec_002_ssl_pair(tmp_path, enabled, reject, mode):
    env = {"DB_HOST": "h", "DB_SSL_ENABLED": enabled}
    if reject is not None:
        env["DB_SSL_REJECT_UNAUTHORIZED"] = reject
    settings = load(tmp_path, env=env)
    assert settings.params["sslmode"] == mode
    assert settings.values["sslmode"].source == "DB_SSL_ENABLED"


def test_db_ssl_mode_beats_the_spec_002_pair(tmp_path):
    env = {"DB_HOST": "h", "DB_SSL_MODE": "verify-ca", "DB_SSL_ENABLED": "false"}
    assert load(tmp_path, env=env).params["sslmode"] == "verify-ca"


def test_no_ssl_setting_leaves_libpq_default(tmp_path):
    settings = load(tmp_path, env={"DB_HOST": "h"})
    assert "sslmode" not in settings.params
    assert "sslmode" not in settings.values


@pytest.mark.parametrize("var", ["DB_SSL_MODE", "DB_SSL_ENABLED"])
def test_url_sslmode_wins_over_the_variables(tmp_path, var):
    env = {"MINNO_DATABASE_URL": "postgresql://u@h/db?sslmode=disable",
           var: "require" if var == "DB_SSL_MODE" else "true"}
    settings = load(tmp_path, env=env)
    assert settings.params["sslmode"] == "disable"
    # config show reports the value used, and the URL as its source
    assert settings.values["sslmode"] == config.Value("disable", "MINNO_DATABASE_URL")


@pytest.mark.parametrize("var", ["DB_SSL_CA", "DB_SSL_CERT", "DB_SSL_KEY"])
def test_missing_certificate_file_is_a_config_error(tmp_path, var):
    missing = tmp_path / "nope" / "file.pem"
    err = config_error(tmp_path, env={"DB_HOST": "h", var: str(missing)})
    assert var in str(err)
    assert str(missing) in str(err)


def test_certificate_files_map_to_libpq_keywords(tmp_path):
    ca, cert, key = _touch(tmp_path, "ca.pem"), _touch(tmp_path, "client.crt"), _touch(tmp_path, "client.key")
    settings = load(tmp_path, env={"DB_HOST": "h", "DB_SSL_MODE": "verify-full", "DB_SSL_CA": ca,
                                   "DB_SSL_CERT": cert, "DB_SSL_KEY": key})
    assert settings.params == {"host": "h", "sslmode": "verify-full", "sslrootcert": ca, "sslcert": cert,
                               "sslkey": key}
    assert settings.values["sslrootcert"] == config.Value(ca, "DB_SSL_CA")
    assert settings.values["sslcert"] == config.Value(cert, "DB_SSL_CERT")
    assert settings.values["sslkey"] == config.Value(key, "DB_SSL_KEY")


def test_certificate_path_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _touch(tmp_path, "ca.pem")
    settings = load(tmp_path, env={"DB_HOST": "h", "DB_SSL_CA": "~/ca.pem"})
    assert settings.params["sslrootcert"] == str(tmp_path / "ca.pem")


def test_url_sslrootcert_wins_over_db_ssl_ca(tmp_path):
    url_ca, env_ca = _touch(tmp_path, "url-ca.pem"), _touch(tmp_path, "env-ca.pem")
    settings = load(tmp_path, env={"DATABASE_URL": f"postgresql://u@h/db?sslrootcert={url_ca}", "DB_SSL_CA": env_ca})
    assert settings.params["sslrootcert"] == url_ca
    assert settings.values["sslrootcert"] == config.Value(url_ca, "DATABASE_URL")


# ---------------------------------------------------------------------------------------------
# Durations, pool size, defaults


@pytest.mark.parametrize("value, seconds", [
    ("10000", 10),
    ("500", 2),  # libpq's minimum
    ("1", 2),
    ("2500", 3),  # whole seconds, rounded up
    ("30s", 30),
    ("30 s", 30),
    ("1500ms", 2),
    ("2min", 120),
    ("2m", 120),
    ("1h", 3600),
    ("1.5s", 2),
    ("45S", 45),
])
def test_connection_timeout(tmp_path, value, seconds):
    settings = load(tmp_path, env={"DB_HOST": "h", "DB_CONNECTION_TIMEOUT": value})
    assert settings.connect_timeout_s == seconds
    assert settings.values["connect_timeout"].source == "DB_CONNECTION_TIMEOUT"


@pytest.mark.parametrize("value", ["abc", "-5", "10 parsecs", "", "5 s s"])
def test_bad_duration_is_a_config_error(tmp_path, value):
    if value == "":  # empty means unset
        assert load(tmp_path, env={"DB_HOST": "h", "DB_CONNECTION_TIMEOUT": value}).connect_timeout_s == 10
        return
    err = config_error(tmp_path, env={"DB_HOST": "h", "DB_CONNECTION_TIMEOUT": value})
    assert "DB_CONNECTION_TIMEOUT" in str(err) and value in str(err)


def test_zero_connection_timeout_is_rejected(tmp_path):
    err = config_error(tmp_path, env={"DB_HOST": "h", "DB_CONNECTION_TIMEOUT": "0"})
    assert "DB_CONNECTION_TIMEOUT" in str(err)


@pytest.mark.parametrize("var", ["DB_STATEMENT_TIMEOUT", "DB_QUERY_TIMEOUT", "DB_IDLE_TIMEOUT"])
def test_bad_server_timeouts_are_config_errors(tmp_path, var):
    err = config_error(tmp_path, env={"DB_HOST": "h", var: "soon"})
    assert var in str(err) and "soon" in str(err)


def test_url_connect_timeout(tmp_path):
    settings = load(tmp_path, env={"DATABASE_URL": "postgresql://u@h/db?connect_timeout=7"})
    assert settings.connect_timeout_s == 7
    assert settings.values["connect_timeout"] == config.Value("7000 ms", "DATABASE_URL")


def test_url_connect_timeout_wins_over_the_variable(tmp_path):
    # connection.py hands the URL's connect_timeout to libpq as it is; config must report that one
    settings = load(tmp_path, env={"DATABASE_URL": "postgresql://u@h/db?connect_timeout=7",
                                   "DB_CONNECTION_TIMEOUT": "30s"})
    assert settings.connect_timeout_s == 7
    assert settings.values["connect_timeout"].source == "DATABASE_URL"


def test_statement_timeout_falls_back_to_query_timeout(tmp_path):
    settings = load(tmp_path, env={"DB_HOST": "h", "DB_QUERY_TIMEOUT": "5s"})
    assert settings.statement_timeout_ms == 5000
    assert settings.values["statement_timeout"] == config.Value("5000 ms", "DB_QUERY_TIMEOUT")
    settings = load(tmp_path, env={"DB_HOST": "h", "DB_QUERY_TIMEOUT": "5s", "DB_STATEMENT_TIMEOUT": "7000"})
    assert settings.statement_timeout_ms == 7000
    assert settings.values["statement_timeout"].source == "DB_STATEMENT_TIMEOUT"


def test_idle_timeout(tmp_path):
    settings = load(tmp_path, env={"DB_HOST": "h", "DB_IDLE_TIMEOUT": "5min"})
    assert settings.idle_timeout_ms == 300_000
    assert settings.values["idle_session_timeout"] == config.Value("300000 ms", "DB_IDLE_TIMEOUT")


@pytest.mark.parametrize("value", ["0", "x", "-1", "2.5", "ten"])
def test_bad_pool_size(tmp_path, value):
    err = config_error(tmp_path, env={"DB_HOST": "h", "DB_POOL_SIZE": value})
    assert "DB_POOL_SIZE" in str(err) and f"'{value}'" in str(err)


def test_pool_size(tmp_path):
    assert load(tmp_path, env={"DB_HOST": "h", "DB_POOL_SIZE": "25"}).pool_size == 25


def test_defaults(tmp_path):
    settings = load(tmp_path, env={"DB_HOST": "h"})
    assert settings.connect_timeout_s == 10
    assert settings.values["connect_timeout"] == config.Value("10000 ms", "default (spec 002)")
    assert settings.statement_timeout_ms is None
    assert settings.values["statement_timeout"].source == "default"
    assert settings.idle_timeout_ms is None
    assert settings.pool_size == 10
    assert settings.values["pool_size"] == config.Value(10, "default (spec 002)")
    assert settings.values["application_name"] == config.Value("minnoctl", "built in")


# ---------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize("url", [
    f"postgres://app:{SECRET}@db.example:6432/minno",
    f"postgresql://app:{SECRET}@db.example:6432/minno",
    f"postgresql+psycopg://app:{SECRET}@db.example:6432/minno",
    f"postgres+psycopg://app:{SECRET}@db.example:6432/minno",
    f"POSTGRES://app:{SECRET}@db.example:6432/minno",
    f"host=db.example port=6432 dbname=minno user=app password={SECRET}",
    # SQLAlchemy's dialect+driver prefixes, as apps write DATABASE_URL (spec 004: postgresql+asyncpg)
    f"postgresql+asyncpg://app:{SECRET}@db.example:6432/minno",
    f"postgresql+psycopg2://app:{SECRET}@db.example:6432/minno",
    f"postgresql+psycopg_async://app:{SECRET}@db.example:6432/minno",
    f"postgresql+pg8000://app:{SECRET}@db.example:6432/minno",
    f"postgresql+psycopg2cffi://app:{SECRET}@db.example:6432/minno",
    f"postgres+asyncpg://app:{SECRET}@db.example:6432/minno",
    f"PostgreSQL+AsyncPG://app:{SECRET}@db.example:6432/minno",
])
def test_accepted_url_forms(tmp_path, url):
    for settings in (load(tmp_path, env={"DATABASE_URL": url}), load(tmp_path, database_url=url)):
        assert settings.params == {"host": "db.example", "port": "6432", "dbname": "minno", "user": "app",
                                   "password": SECRET}
        assert settings.secrets() == [SECRET]


@pytest.mark.parametrize("query, sslmode", [("ssl=require", "require"), ("ssl=verify-full", "verify-full"),
                                            ("ssl=disable", "disable"), ("sslmode=require", "require")])
def test_asyncpg_ssl_parameter_is_libpq_sslmode(tmp_path, query, sslmode):
    """asyncpg (and SQLAlchemy's asyncpg dialect) spell libpq's sslmode as ?ssl=MODE."""
    settings = load(tmp_path, env={"DATABASE_URL": f"postgresql+asyncpg://app:{SECRET}@db.example/minno?{query}"})
    assert settings.params["sslmode"] == sslmode and "ssl" not in settings.params


@pytest.mark.parametrize("url, phrase", [
    (f"postgresql+mysqldb://app:{SECRET}@db/minno", "driver 'mysqldb'"),
    (f"postgresql+asyncpg://app:{SECRET}@db/minno?ssl=sometimes", "ssl 'sometimes'"),
    (f"postgresql://app:{SECRET}@db/minno?ssl=require", "not a valid PostgreSQL URL"),
])
def test_refused_dialect_urls(tmp_path, url, phrase):
    with pytest.raises(config.ConfigError) as info:
        load(tmp_path, env={"DATABASE_URL": url})
    assert phrase in str(info.value) and SECRET not in str(info.value)


def test_url_with_unix_socket_and_ipv6(tmp_path):
    settings = load(tmp_path, env={"DATABASE_URL": "postgresql://app@/minno?host=/var/run/postgresql"})
    assert settings.params == {"user": "app", "dbname": "minno", "host": "/var/run/postgresql"}
    settings = load(tmp_path, env={"DATABASE_URL": "postgresql://app@[::1]:5433/minno"})
    assert settings.params["host"] == "::1" and settings.params["port"] == "5433"


@pytest.mark.parametrize("url, phrase", [
    (f"mysql://app:{SECRET}@db:3306/minno", "scheme 'mysql'"),
    (f"http://app:{SECRET}@db/minno", "scheme 'http'"),
    (f"postgresql://app:{SECRET}@db:notaport/minno", "port 'notaport'"),
    (f"postgresql://app:{SECRET}@db:0/minno", "port '0'"),
    (f"postgresql://app:{SECRET}@db:65536/minno", "port '65536'"),
    (f"postgresql://app:{SECRET}@db/minno?sslmode=sometimes", "sslmode 'sometimes'"),
    (f"postgresql://app:{SECRET}@db/minno?nosuchoption=1", "not a valid PostgreSQL URL"),
    (f"postgresql://app:{SECRET}@[db/minno", "not a valid PostgreSQL URL"),
    (f"postgresql://app:{SECRET[:5]}%ZZ{SECRET[5:]}@db/minno", "not a valid PostgreSQL URL"),
    (f"postgresql://app:{SECRET} x@db/minno", "not a valid PostgreSQL URL"),
    (f"postgresql://app@db/minno?password={SECRET}%ZZ", "not a valid PostgreSQL URL"),
    (f"postgresql://app@db/minno?password={SECRET} x", "not a valid PostgreSQL URL"),
    (f"host=db password={SECRET} port", "not a valid PostgreSQL URL"),
    (f"host=db password='{SECRET}", "not a valid PostgreSQL URL"),
])
@pytest.mark.parametrize("where", ["env", "argument"])
def test_invalid_urls_never_echo_the_password(tmp_path, url, phrase, where):
    kwargs = {"env": {"MINNO_DATABASE_URL": url}} if where == "env" else {"database_url": url}
    err = config_error(tmp_path, **kwargs)
    message = str(err)
    assert phrase in message
    assert ("MINNO_DATABASE_URL" if where == "env" else "--database-url") in message
    assert SECRET not in message
    assert SECRET[:5] not in message and SECRET[5:] not in message


# ---------------------------------------------------------------------------------------------
# Masking


@pytest.mark.parametrize("params, url", [
    ({"user": "app", "password": SECRET, "host": "db", "port": "5432", "dbname": "minno"},
     "postgresql://app:****@db:5432/minno"),
    ({"user": "app", "host": "db", "dbname": "minno"}, "postgresql://app@db/minno"),
    ({"user": "app", "password": SECRET, "host": "/var/run/postgresql", "dbname": "minno"},
     "postgresql://app:****@/minno?host=/var/run/postgresql"),
    ({"host": "/tmp", "port": "5433", "dbname": "minno"}, "postgresql:///minno?host=/tmp&port=5433"),
    ({"host": "::1", "port": "5433", "dbname": "d"}, "postgresql://[::1]:5433/d"),
    ({"user": "a@b", "host": "db", "dbname": "my db"}, "postgresql://a%40b@db/my%20db"),
    ({"host": "db", "dbname": "d", "sslmode": "require"}, "postgresql://db/d?sslmode=require"),
    ({"service": "prod"}, "postgresql:///?service=prod"),
])
def test_display_url(params, url):
    assert display_url(params) == url
    assert SECRET not in display_url(params)


def test_settings_display_url_masks_the_password(tmp_path):
    settings = load(tmp_path, env={"MINNO_DATABASE_URL": f"postgresql://app:{SECRET}@db:5432/minno"})
    assert settings.display_url() == "postgresql://app:****@db:5432/minno"


def test_scrub_removes_given_secrets_and_url_passwords():
    text = f"could not connect with {SECRET}: see postgresql://app:hunter2@db/minno and mysql://x:y@h"
    scrubbed = scrub(text, [SECRET])
    assert SECRET not in scrubbed and "hunter2" not in scrubbed
    assert scrubbed == ("could not connect with ****: see postgresql://app:****@db/minno and mysql://x:****@h")


def test_scrub_removes_url_encoded_secrets_and_keyword_passwords():
    secret = "p@ss word/1"
    text = "url postgresql://app@db/minno?password=p%40ss%20word%2F1 and host=db password=hunter2 port=1"
    scrubbed = scrub(text, [secret])
    assert "p%40ss%20word%2F1" not in scrubbed
    assert "hunter2" not in scrubbed
    assert "host=db password=**** port=1" in scrubbed


def test_scrub_leaves_clean_text_alone():
    text = "connection refused at postgresql://app@db:5432/minno"
    assert scrub(text, ["", "ab"]) == text  # empty and very short secrets are not replaced


# ---------------------------------------------------------------------------------------------
# MINNO_HOME


def test_minno_home_from_environment(tmp_path):
    settings = load(tmp_path, env={"MINNO_HOME": str(tmp_path / "home")})
    assert settings.minno_home == tmp_path / "home"
    assert settings.values["minno_home"] == config.Value(str(tmp_path / "home"), "MINNO_HOME")


def test_minno_home_from_env_file(tmp_path):
    settings = load(tmp_path, dotenv=f"MINNO_HOME={tmp_path / 'dot'}\n")
    assert settings.minno_home == tmp_path / "dot"
    assert settings.values["minno_home"].source == ".env: MINNO_HOME"


def test_minno_home_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load(tmp_path, env={"MINNO_HOME": "~/mh"}).minno_home == tmp_path / "mh"


def test_minno_home_default_is_the_user_data_directory(tmp_path):
    settings = load(tmp_path)
    assert settings.minno_home == Path(platformdirs.user_data_dir("minnoctl", appauthor=False))
    assert settings.minno_home.name == "minnoctl"
    assert settings.values["minno_home"].source == "default (user data directory)"


def test_a_password_alone_names_no_server(tmp_path):
    for var in ("DB_PASSWORD", "PGPASSWORD"):
        settings = load_settings(env={var: "only-a-password"}, cwd=tmp_path)
        assert settings.embedded and settings.source == "embedded"


def test_component_variables_may_be_split_between_environment_and_env_file(tmp_path):
    (tmp_path / ".env").write_text("DB_PASSWORD=from-dotenv\nDB_NAME=ignored_if_env_has_it\n")
    settings = load_settings(env={"DB_HOST": "db.internal", "DB_NAME": "minno"}, cwd=tmp_path)
    assert settings.params == {"host": "db.internal", "dbname": "minno", "password": "from-dotenv"}
    assert settings.source == "DB_HOST, DB_NAME"
