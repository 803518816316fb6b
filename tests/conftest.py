"""Test harness: real PostgreSQL servers, never a mock of one.

Servers:
  - `server`: the database the suite runs against. By default minnoctl's own embedded PostgreSQL 18
    (the one users get), under a temporary MINNO_HOME; MINNO_TEST_DATABASE_URL points it at any
    other server; `pytest --docker` starts tests/docker-compose.yml (an official pgvector image)
    with pytest-docker, where a Docker engine exists.
  - `pg15`: Debian's PostgreSQL 15, initdb'd into a temporary folder, over TCP with scram
    passwords and SSL (certificates made by the test). Required in CI (CI=true); skipped on a
    developer machine without /usr/lib/postgresql/15.
  - `pg18tcp`: the embedded package's PostgreSQL 18 binaries as a plain TCP server without SSL,
    started by the tests (a server minnoctl did not start).
Each test that needs a database gets a fresh one (`database`), dropped afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

# Isolate the suite from the developer's environment before minnoctl reads anything.
_ISOLATE = ("MINNO_DATABASE_URL", "DATABASE_URL", "POSTGRES_URL", "RAILWAY_DATABASE_URL", "DB_HOST", "DB_PORT",
            "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_SSL_MODE", "DB_SSL_CA", "DB_SSL_CERT", "DB_SSL_KEY",
            "DB_SSL_ENABLED", "DB_SSL_REJECT_UNAUTHORIZED", "DB_CONNECTION_TIMEOUT", "DB_STATEMENT_TIMEOUT",
            "DB_QUERY_TIMEOUT", "DB_IDLE_TIMEOUT", "DB_POOL_SIZE", "PGHOST", "PGHOSTADDR", "PGPORT",
            "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE", "PGSSLMODE", "MINNOCTL_TRACEBACK", "NO_COLOR")
for _name in _ISOLATE:
    os.environ.pop(_name, None)

# The developer's own embedded database: their MINNO_HOME, and the default one (the user data
# directory). No test may use either: the session points both at a temporary folder (`minno_home`).
from minnoctl.config import default_minno_home  # noqa: E402

DEVELOPER_HOMES = frozenset(Path(p).expanduser().absolute() for p in
                            (os.environ.pop("MINNO_HOME", None), default_minno_home()) if p)

sys.path.insert(0, str(Path(__file__).parent))
from pgcluster import DEBIAN_PG15, CitusCluster, Cluster, citus_installed, without_pgvector  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--docker", action="store_true", default=False,
                     help="run against tests/docker-compose.yml (pgvector image) with pytest-docker")


@dataclass
class Target:
    """A server the tests can create databases on."""

    name: str
    admin_url: str  # superuser URL to the maintenance database

    def url(self, dbname: str) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = dbname
        return make_conninfo("", **params)


@pytest.fixture(scope="session", autouse=True)
def minno_home(tmp_path_factory: pytest.TempPathFactory):
    """The session's MINNO_HOME: the embedded server every CLI test without a URL uses. It is also
    the default home (XDG_DATA_HOME points into the session's folder, and minnoctl processes inherit
    both), so a test that configures no home never reaches the developer's own; one that names the
    developer's home in-process fails (the guard below; tests/test_embedded_home.py)."""
    from minnoctl.local import Embedded, remove

    data = tmp_path_factory.mktemp("data")
    home = data / "minnoctl"  # what platformdirs makes of XDG_DATA_HOME
    home.mkdir(mode=0o700)
    os.environ["XDG_DATA_HOME"] = str(data)
    os.environ["MINNO_HOME"] = str(home)
    unguarded = Embedded.__init__

    def guarded(self: Embedded, home: Path, *args, **kwargs) -> None:
        unguarded(self, home, *args, **kwargs)
        if self.home in DEVELOPER_HOMES:
            raise AssertionError(f"a test used the developer's own embedded home {self.home}; "
                                 "use the session's (minno_home) or a tmp_path")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Embedded, "__init__", guarded)
        yield home
    Embedded(home).stop(wait_s=5)
    remove(home)  # as root, the server's private data directory (outside the home) and its own user too


@pytest.fixture(scope="session")
def server(request: pytest.FixtureRequest, minno_home: Path) -> Target:
    url = os.environ.get("MINNO_TEST_DATABASE_URL")
    if url:
        return Target("external", url)
    if request.config.getoption("--docker"):
        services = request.getfixturevalue("docker_services")
        ip = request.getfixturevalue("docker_ip")
        port = services.port_for("postgres", 5432)
        url = f"postgresql://postgres:postgres@{ip}:{port}/postgres"

        def ready() -> bool:
            import psycopg

            try:
                psycopg.connect(url, connect_timeout=2).close()
                return True
            except psycopg.OperationalError:
                return False

        services.wait_until_responsive(check=ready, timeout=60, pause=0.5)
        return Target("docker", url)
    from minnoctl.local import Embedded

    info, _ = Embedded(minno_home).ensure_running(hold=False)
    params = info.params() | {"dbname": "postgres"}
    return Target("embedded", f"host={params['host']} port={params['port']} user={params['user']} dbname=postgres")


@pytest.fixture(scope="session")
def docker_compose_file(pytestconfig: pytest.Config) -> str:
    return str(Path(__file__).parent / "docker-compose.yml")


def _need_pg15() -> None:
    if not (DEBIAN_PG15 / "initdb").exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's PostgreSQL 15 is missing in CI: .ci/run must install postgresql-15")
        pytest.skip("Debian's PostgreSQL 15 is not installed (apt-get install postgresql-15)")


@pytest.fixture(scope="session")
def pg15(tmp_path_factory: pytest.TempPathFactory):
    _need_pg15()
    cluster = Cluster("pg15", DEBIAN_PG15, tmp_path_factory.mktemp("pg15"), ssl=True).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def pg15_novector(pg15, tmp_path_factory: pytest.TempPathFactory):
    """PostgreSQL 15 without pgvector, for the tests of a server that lacks it: `pg15` itself where
    pgvector is not installed, else a server from a copy of the installation without its files."""
    import psycopg

    with psycopg.connect(pg15.url("postgres")) as conn:
        if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
            yield pg15
            return
    folder = tmp_path_factory.mktemp("pg15nv")
    cluster = Cluster("pg15nv", without_pgvector(folder / "install"), folder / "server", ssl=False).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def citus(tmp_path_factory: pytest.TempPathFactory):
    """A three-node Citus 13 cluster on PostgreSQL 15 (coordinator + two workers on loopback ports).
    Needs the extension (../shared/pg15-extensions/install.sh); .ci/run installs it and sets
    MINNOCTL_TEST_CITUS=required, so there a missing extension fails instead of skipping."""
    _need_pg15()
    if not citus_installed():
        if os.environ.get("MINNOCTL_TEST_CITUS") == "required":
            pytest.fail("Citus is missing though .ci/run installed it: see ../shared/pg15-extensions/install.sh")
        pytest.skip("Citus is not installed for PostgreSQL 15 (../shared/pg15-extensions/install.sh)")
    cluster = CitusCluster(tmp_path_factory.mktemp("citus")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def citus_db(citus: CitusCluster):
    """A fresh database on every node of the Citus cluster (citus created, workers added); yields the
    coordinator's URL to it and drops it on every node afterwards."""
    name = f"c_{uuid.uuid4().hex[:12]}"
    yield citus.create_database(name)
    citus.drop_database(name)


@pytest.fixture(scope="session")
def pg18tcp(tmp_path_factory: pytest.TempPathFactory):
    from minnoctl.local import bin_dir

    cluster = Cluster("pg18", bin_dir(), tmp_path_factory.mktemp("pg18"), ssl=False).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["server", "pg15"])
def any_server(request: pytest.FixtureRequest) -> Target:
    """Runs a test on the suite's server (embedded PostgreSQL 18 by default) and on PostgreSQL 15."""
    if request.param == "server":
        return request.getfixturevalue("server")
    cluster = request.getfixturevalue("pg15")
    return Target("pg15", cluster.url("postgres"))


@pytest.fixture
def database(any_server: Target):
    """A fresh, empty database on each server; yields its URL and drops it afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield any_server.url(name)
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def kek():
    """A fresh master key (the tests of seed, token and health encrypt with it)."""
    from minnoctl import crypto

    return crypto.MasterKey(crypto.generate_key(), "test")


@pytest.fixture(autouse=True)
def _clean_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in an empty directory, so no developer .env leaks in."""
    monkeypatch.chdir(tmp_path)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(minno_home: Path):
    """Run minnoctl in-process with Typer's CliRunner; stdout and stderr apart."""
    from typer.testing import CliRunner

    from minnoctl.cli import app

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        result = CliRunner().invoke(app, list(args), env=env, input=input)
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def run_minnoctl(minno_home: Path):
    """Run minnoctl as a real process (`python -m minnoctl`)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            home: Path | None = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        if home is not None:
            full_env["MINNO_HOME"] = str(home)
        full_env.update(env or {})
        return subprocess.run([sys.executable, "-m", "minnoctl", *args], capture_output=True, text=True,
                              env=full_env, timeout=timeout)

    return run


PG15_MODULES = "minno,chatbot,assistant,supervisor,slackbot"  # Debian's 15 has no pgvector


def modules_for(target: Target) -> str | None:
    """The modules a server can hold: all of them, or all but knowledge without pgvector."""
    import psycopg

    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        has_vector = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    return None if has_vector else PG15_MODULES


_templates: dict[str, str] = {}


@pytest.fixture
def migrated(any_server: Target):
    """A fresh database with every module the server can hold, made from a migrated template."""
    import psycopg

    from minnoctl import migrate, modules
    from minnoctl.config import load_settings

    if any_server.name not in _templates:
        name = f"tmpl_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        settings = load_settings(env={"MINNO_DATABASE_URL": any_server.url(name)})
        migrate.init(settings, modules.parse_list(modules_for(any_server)))
        _templates[any_server.name] = name
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_templates[any_server.name]}"')
    yield any_server.url(name)
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


NODE_MODULES = Path(__file__).parent / "node" / "node_modules"


@pytest.fixture(scope="session")
def node():
    """Run a CommonJS script with Node and the npm packages of tests/node (pg, drizzle-orm,
    typescript), as the seed documents' applications would; returns the CompletedProcess.
    Installed by .ci/run (`npm ci --prefix tests/node`); required in CI, skipped elsewhere."""
    import shutil

    if shutil.which("node") is None or not NODE_MODULES.is_dir():
        if os.environ.get("CI"):
            pytest.fail("node or tests/node/node_modules is missing in CI: .ci/run must install them")
        pytest.skip("node and `npm ci --prefix tests/node` are needed for the outside-in app tests")

    def run(script: str, *, env: dict[str, str] | None = None, timeout: float = 60,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MINNO_"))}
        full_env["NODE_PATH"] = str(NODE_MODULES)
        full_env.update(env or {})
        return subprocess.run(["node", "-e", script], capture_output=True, text=True, env=full_env,
                              timeout=timeout, cwd=cwd)

    return run


def transpile_typescript(source: str) -> str:
    """The TypeScript of a seed document as CommonJS JavaScript (types stripped, nothing checked)."""
    out = subprocess.run(
        ["node", "-e", "const ts=require('typescript');let s='';process.stdin.on('data',d=>s+=d).on('end',()=>"
         "process.stdout.write(ts.transpileModule(s,{compilerOptions:{module:ts.ModuleKind.CommonJS,"
         "target:ts.ScriptTarget.ES2020}}).outputText))"],
        input=source, capture_output=True, text=True, check=True,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)})
    return out.stdout
