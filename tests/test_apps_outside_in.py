"""Outside in: the five seed documents' own application code against the database minnoctl builds.

Each application connects as an operator would set it up: `minnoctl db init`, `minnoctl seed`,
then `minnoctl app create MODULE ...`, whose env file gives the app its DATABASE_URL; the app never
sees the superuser. The code that runs is the documents' own (tests/apps/documents.py extracts it
from ../shared/spec at test time, or takes its verbatim copy in tests/apps/vendored/):

- 002 (assistant): the DatabaseService class and its persistence methods, TypeScript transpiled to
  CommonJS, with node-postgres; the token columns through minnoctl's Node client
  (minnoctl/clients/node/minno-fields.cjs);
- 001 (chatbot): `src/db/schema.ts` with drizzle-orm's node-postgres driver, and its SQL;
- 000 (minno): its Common Queries through the node-postgres Pools of "Connection Security", and
  the optional audit_log table an app creates itself;
- 003 (supervisor + knowledge, one service): its port, task-timing and learnings functions, views
  and uuid-ossp / pgcrypto, called unqualified;
- 004 (slackbot): SQLAlchemy 2 async over asyncpg with `postgresql+asyncpg://`, and psycopg 3.

The servers: PostgreSQL 18 from the embedded package's binaries and Debian's PostgreSQL 15, each a
cluster this module starts (tests/pgcluster.py) on TCP: the embedded server itself listens on a unix
socket only, and an app connects over TCP. PostgreSQL 15 has SSL on. The embedded PostgreSQL 18 is
built without SSL, which matters to spec 002: its DatabaseService turns SSL on for every URL that
contains `postgresql://` (`ssl: DATABASE_URL.includes('postgresql://') ? {rejectUnauthorized: false}
: false`), so on that server it gets the env file's URL in its other spelling, `postgres://` (the
same URL to node-postgres), which the document's own switch maps to `ssl: false`; and spec 000's
"Production: Use SSL" pool runs on PostgreSQL 15 only. Every role but the superuser must log in with
its password (scram-sha-256), so the env file's password is really checked. One database per server
is shared by the tests of this module (roles are cluster-wide and `app create` takes a while); tests
that write keep to rows of their own, or run in a rolled-back transaction.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import stat
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pytest

from apps import documents
from conftest import PG15_MODULES, _need_pg15, transpile_typescript
from minnoctl import crypto
from pgcluster import DEBIAN_PG15, Cluster

APPS = Path(__file__).parent / "apps"
REPO = Path(__file__).parents[1]
MINNO_FIELDS = REPO / "minnoctl" / "clients" / "node" / "minno-fields.cjs"
DBNAME = "apps_outside_in"
ALL_MODULES = "minno,chatbot,assistant,supervisor,knowledge,slackbot"


# ---------------------------------------------------------------------------------------------
# The servers and the apps' logins


@dataclass
class App:
    role: str
    modules: list[str]
    url: str  # DATABASE_URL from the env file, password included
    env_file: Path
    record: dict
    stdout: str
    stderr: str

    @property
    def password(self) -> str:
        return unquote(urlsplit(self.url).password or "")


@dataclass
class Site:
    name: str
    cluster: Cluster
    folder: Path
    home: Path
    master_key: str
    init: subprocess.CompletedProcess | None = None
    seed: subprocess.CompletedProcess | None = None
    has_vector: bool = False
    extensions: set[str] = field(default_factory=set)
    apps: dict[str, App] = field(default_factory=dict)

    def admin_url(self, dbname: str = DBNAME, **query: str) -> str:
        return self.cluster.url(dbname, **query)

    def minnoctl(self, *args: str, dbname: str = DBNAME, input: str | None = None, cwd: Path | None = None,
                 env: dict[str, str] | None = None, query: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """minnoctl as a real process, as the operator runs it: the superuser's URL and the master
        key in the environment, never in argv."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        full |= {"MINNO_HOME": str(self.home), "MINNO_DATABASE_URL": self.admin_url(dbname, **(query or {})),
                 "MINNO_MASTER_KEY": self.master_key, **(env or {})}
        return subprocess.run([sys.executable, "-m", "minnoctl", *args], capture_output=True, text=True, env=full,
                              input=input, cwd=cwd or self.folder, timeout=180)

    def create_app(self, *modules: str, role: str | None = None, extra: tuple[str, ...] = (),
                   dbname: str = DBNAME, folder: Path | None = None, query: dict[str, str] | None = None) -> App:
        """`minnoctl app create MODULE ... --format json` in `folder`, which gets ./<role>.env."""
        folder = folder or self.folder
        args = ["app", "create", *modules, *(["--role", role] if role else []), *extra, "--format", "json"]
        result = self.minnoctl(*args, dbname=dbname, cwd=folder, query=query)
        assert result.returncode == 0, f"minnoctl {' '.join(args)}: exit {result.returncode}\n{result.stderr}"
        records = json.loads(result.stdout)
        records = records if isinstance(records, list) else [records]
        assert len(records) == 1, records
        record = records[0]
        env_file = Path(record["env_file"])
        env_file = env_file if env_file.is_absolute() else folder / env_file
        assert env_file == folder / f"{record['role']}.env", record  # the documented default, ./<role>.env
        return App(record["role"], list(modules), read_env_file(env_file)["DATABASE_URL"], env_file, record,
                   result.stdout, result.stderr)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as dotenv reads them (the apps load their env file with dotenv or the shell)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _harden(cluster: Cluster) -> None:
    """Password logins for every role but the superuser (the test's admin), over TCP with or without SSL."""
    (cluster.pgdata / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n")
    with psycopg.connect(**cluster.admin_params(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="module", params=["pg18", "pg15", "citus"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, minno_home: Path):
    """A server, a database made by `minnoctl db init` + `minnoctl seed`, and one login per app.
    "citus": the coordinator of the suite's three-node Citus cluster (PostgreSQL 15, tests/pgcluster.py),
    where db init lays the schema out by the distribution plans; its nodes keep trust logins, since
    the coordinator connects to the workers (and to itself) as the application's own role."""
    from minnoctl.local import bin_dir

    if request.param in ("pg15", "citus"):
        _need_pg15()
    folder = tmp_path_factory.mktemp(f"apps-{request.param}")
    citus = request.getfixturevalue("citus") if request.param == "citus" else None
    if citus is not None:
        citus.create_database(DBNAME)
        cluster = citus.coordinator
    else:
        ssl = request.param == "pg15"  # the embedded package's PostgreSQL 18 is built without SSL
        cluster = Cluster(request.param, DEBIAN_PG15 if ssl else bin_dir(), folder / "cluster", ssl=ssl).start()
    try:
        if citus is None:
            _harden(cluster)
        with psycopg.connect(**cluster.admin_params(), autocommit=True) as conn:
            available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
        s = Site(request.param, cluster, folder, minno_home, crypto.encode_key(crypto.generate_key()),
                 has_vector="vector" in available, extensions=available)
        modules = ALL_MODULES if s.has_vector else PG15_MODULES
        s.init = s.minnoctl("db", "init", "--modules", modules, "--yes")
        assert s.init.returncode == 0, s.init.stderr
        s.seed = s.minnoctl("seed", "--yes")
        assert s.seed.returncode == 0, s.seed.stderr
        if citus is not None:
            assert "laid the schema out on the Citus cluster" in s.init.stderr, s.init.stderr
        yield s
    finally:
        if citus is not None:
            citus.drop_database(DBNAME)
        else:
            cluster.stop()


def app(site: Site, name: str) -> App:
    """The login of one system, made once per server (the first test that needs it runs app create)."""
    if name not in site.apps:
        if name == "supervisor":  # spec 003 is one service over two modules
            modules = ("supervisor", "knowledge") if site.has_vector else ("supervisor",)
            site.apps[name] = site.create_app(*modules, role="supervisor_app")
        else:
            site.apps[name] = site.create_app(name)
    return site.apps[name]


# ---------------------------------------------------------------------------------------------
# Running the documents' code


def node_env(a: App, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": a.url, **extra}


def run_node(node, script: str, env: dict[str, str], tmp_path: Path, logs: list[str] | None = None) -> dict | list:
    """Run a script; its JSON stdout. `logs` gets its stderr lines."""
    result = node(script, env=env, cwd=tmp_path)
    if logs is not None:
        logs.extend(result.stderr.splitlines())
    try:
        out = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"node exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}") from None
    assert result.returncode == 0, f"node failed: {out}\nstderr: {result.stderr}"
    return out


def statements(sql: str) -> list[str]:
    """A document's SQL block as its statements ('--' comments dropped, ';' outside quotes ends one)."""
    out, buf, i, quoted = [], [], 0, False
    while i < len(sql):
        ch = sql[i]
        if quoted:
            quoted = ch != "'"
        elif ch == "'":
            quoted = True
        elif sql.startswith("--", i):
            i = sql.find("\n", i) if "\n" in sql[i:] else len(sql)
            continue
        elif ch == ";":
            out.append("".join(buf).strip())
            buf = []
            i += 1
            continue
        buf.append(ch)
        i += 1
    if "".join(buf).strip():
        out.append("".join(buf).strip())
    return [s for s in out if s]


def run_sql(node, a: App, sql: list, tmp_path: Path, *, rollback: bool = True, pool: str | None = None) -> list[dict]:
    """Statements (text, or {text, params}) through node-postgres as the app `a`: on a Client from
    DATABASE_URL, or on the Pool a document's snippet `pool` builds."""
    runner = json.dumps(str(APPS / "sql_runner.cjs"))
    script = (f"const {{ Pool }} = require('pg');\n{pool}\nrequire({runner}).main(pool)"
              f".catch((e) => {{ console.error(e); process.exit(1); }});" if pool
              else f"require({runner}).main().catch((e) => {{ console.error(e); process.exit(1); }});")
    stmts = [s if isinstance(s, dict) else {"text": s} for s in sql]
    return run_node(node, script, node_env(a, STATEMENTS=json.dumps(stmts), ROLLBACK="1" if rollback else "0"),
                    tmp_path)


def assert_all_ran(results: list[dict], stmts: list) -> None:
    failed = [(s if isinstance(s, str) else s["text"], r["error"]) for s, r in zip(stmts, results) if "error" in r]
    assert not failed, "the database fails the app's own SQL:\n" + "\n".join(f"{e['code']} {e['message']}\n  in: {s}"
                                                                             for s, e in failed)


def admin(site: Site, dbname: str = DBNAME) -> psycopg.Connection:
    return psycopg.connect(site.admin_url(dbname), autocommit=True)


# ---------------------------------------------------------------------------------------------
# The copies are the documents' text


def test_vendored_copies_are_the_documents_own():
    if not documents.documents_present():
        pytest.skip(f"the seed documents are not here ({documents.SPEC_DIR}); the vendored copies run instead")
    stale = [name for name in documents.PIECES
             if documents.render(name, documents.extract(documents.PIECES[name])) != documents.vendored_text(name)]
    assert not stale, f"tests/apps/vendored/ differs from the documents for {stale}: " \
                      "run python tests/apps/documents.py --write"


# ---------------------------------------------------------------------------------------------
# The logins themselves


def test_app_create_gives_each_system_a_password_login_with_its_search_path(site):
    expected = {"assistant": ["assistant"], "chatbot": ["chatbot"], "minno": ["minno"], "slackbot": ["slackbot"],
                "supervisor": ["supervisor", "knowledge"] if site.has_vector else ["supervisor"]}
    for name, schemas in expected.items():
        a = app(site, name)
        assert stat.S_IMODE(a.env_file.stat().st_mode) == 0o600, a.env_file
        parts = urlsplit(a.url)
        assert parts.scheme in ("postgresql", "postgres") and unquote(parts.username) == a.role and a.password
        assert (parts.hostname, parts.port, parts.path) == ("127.0.0.1", site.cluster.port, f"/{DBNAME}"), a.url
        assert a.password not in a.stdout + a.stderr, "the password reached the output"
        assert a.password not in a.record["url"] and urlsplit(a.record["url"]).username == a.role
        with psycopg.connect(a.url) as conn:
            user, path = conn.execute("SELECT current_user, current_setting('search_path')").fetchone()
        assert user == a.role
        first = [p.strip().strip('"') for p in path.split(",")][:len(schemas)]
        assert first == schemas, f"{a.role}: search_path {path!r}"
        if site.name == "citus":  # its nodes trust loopback logins (see `site`)
            continue
        wrong = a.url.replace(f":{parts.password}@", ":not-the-password@")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(wrong).close()


# ---------------------------------------------------------------------------------------------
# Spec 002: the AI Assistant Platform's DatabaseService


SCAFFOLD_002 = """\
// Scaffolding the document's snippets assume, and nothing else: pg's Pool, fs and path (runMigrations),
// and a BaseService with the constructor(name), logInfo and logError the class calls (logs go to stderr
// as JSON lines) and the getMigrationFiles() runMigrations calls (the files in MIGRATION_FILES).
import { Pool } from 'pg';
import { promises as fs } from 'fs';
import * as path from 'path';

class BaseService {
  constructor(protected readonly serviceName: string) {}
  protected logInfo(message: string, meta?: any): void {
    console.error(JSON.stringify({ level: 'info', service: this.serviceName, message, meta }));
  }
  protected logError(message: string, error?: any): void {
    console.error(JSON.stringify({ level: 'error', service: this.serviceName, message, error: String(error) }));
  }
  protected async getMigrationFiles(): Promise<string[]> {
    return JSON.parse(process.env.MIGRATION_FILES || '[]');
  }
}

"""
METHODS_002 = ("002-user-tokens", "002-sessions", "002-confirmations", "002-health", "002-run-migrations")


@pytest.fixture(scope="module")
def database_service(tmp_path_factory) -> Path:
    """Spec 002's DatabaseService with its methods (the document's blocks) as one CommonJS module."""
    cls = documents.code("002-database-service").rstrip()
    assert cls.endswith("}")
    methods = "".join(documents.code(n) for n in METHODS_002)
    source = SCAFFOLD_002 + cls[:-1] + "\n" + methods + "}\n"
    path = tmp_path_factory.mktemp("spec002") / "database_service.js"
    path.write_text(transpile_typescript(source))
    return path


def no_ssl_spelling(url: str) -> str:
    """The same URL as `postgres://`, which spec 002's DatabaseService connects to without SSL."""
    return re.sub(r"^postgresql://", "postgres://", url)


def assistant(node, site: Site, database_service: Path, tmp_path: Path, scenario: str, login: App | None = None,
              logs: list[str] | None = None, url: str | None = None, **env: str) -> dict:
    a = login or app(site, "assistant")
    url = url or (a.url if site.cluster.ssl else no_ssl_spelling(a.url))  # see the module's doc
    script = f"require({json.dumps(str(APPS / 'assistant_app.cjs'))})"
    return run_node(node, script, {"DATABASE_URL": url, "APP_MODULE": str(database_service), "SCENARIO": scenario,
                                   "MINNO_FIELDS": str(MINNO_FIELDS), **env}, tmp_path, logs)


def test_assistant_sessions_confirmations_and_health(site, node, database_service, tmp_path):
    logs: list[str] = []
    out = assistant(node, site, database_service, tmp_path, "flow", logs=logs)
    started = [json.loads(ln) for ln in logs if "initialized successfully" in ln]
    assert started and started[0]["meta"]["databaseUrl"] == f"postgres{'ql' * site.cluster.ssl}://127.0.0.1:" \
                                                            f"{site.cluster.port}/{DBNAME}", logs
    assert app(site, "assistant").password not in "\n".join(logs)
    created, updated = out["created"], out["updated"]
    assert created["conversation_history"] == [{"role": "user", "content": "hello"}]
    assert created["slack_context"] == {"channel": "C0OUTSIDE"}
    assert updated["tool_calls"] == [{"tool": "search"}] and updated["tool_results"] == [{"ok": True}]
    assert updated["last_activity"] > created["last_activity"] and updated["updated_at"] is not None
    assert out["pending"]["status"] == "pending" and out["pending"]["resolved_at"] is None
    assert out["resolved"]["status"] == "confirmed" and out["resolved"]["resolved_at"] is not None
    health = out["health"]
    assert health["healthy"] is True, health
    assert health["details"]["version"].startswith(f"PostgreSQL {site.cluster.version.split('.')[0]}")
    with admin(site) as conn:
        assert conn.execute("SELECT user_id FROM assistant.sessions WHERE session_id = %s",
                            (out["sessionId"],)).fetchone() == ("U-outside-in",)


PLAINTEXT = {"google_access_token": "ya29.outside-in-google-access", "google_refresh_token": "1//outside-in-refresh",
             "slack_access_token": "xoxp-outside-in-slack", "slack_refresh_token": None}


def test_assistant_reads_a_token_that_minnoctl_put(site, node, database_service, tmp_path):
    user_id = f"U-put-{uuid.uuid4().hex[:8]}"
    secret = f"ya29.put-by-minnoctl-{uuid.uuid4().hex}"
    result = site.minnoctl("token", "put", "--user", user_id, "--provider", "google", "--access-token-file", "-",
                           input=secret + "\n")
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    out = assistant(node, site, database_service, tmp_path, "read", USER_ID=user_id,
                    MINNO_MASTER_KEY=site.master_key)
    assert out["tokens"]["userId"] == user_id
    assert out["tokens"]["googleTokens"]["access_token"] != secret  # the app reads the field, not plaintext
    assert out["plain"]["google_access_token"] == secret


def test_assistant_with_sslmode_require_from_minnoctl_and_the_readmes_two_remedies(site, node, database_service,
                                                                                  tmp_path):
    """An operator whose MINNO_DATABASE_URL says sslmode=require (a managed server, Railway's for
    spec 002): the app's URL keeps it, and node-postgres 8 reads it as verify-full, overriding the
    document's `ssl: {rejectUnauthorized: false}` (the README's "Limits, on purpose"): the
    DatabaseService fails on a private CA, and works with either remedy the README gives in the
    app's own copy of the URL: `&sslrootcert=CA` or `&uselibpqcompat=true`."""
    if not site.cluster.ssl:
        pytest.skip("the embedded PostgreSQL 18 is built without SSL")
    folder = tmp_path / "sslmode"
    folder.mkdir()
    a = site.create_app("assistant", role="assistant_sslmode_app", folder=folder, query={"sslmode": "require"})
    assert urlsplit(a.url).query == "sslmode=require", a.url
    with psycopg.connect(a.url) as conn:  # libpq: encrypted, certificate not checked
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    result = run_node_raw(node, database_service, a.url, tmp_path)
    assert "SELF_SIGNED_CERT_IN_CHAIN" in result.stdout, result.stdout + result.stderr
    for remedy in (f"&sslrootcert={site.cluster.certs.ca}", "&uselibpqcompat=true"):
        out = assistant(node, site, database_service, tmp_path, "flow", login=a, url=a.url + remedy)
        assert out["health"]["healthy"] is True, remedy


def run_node_raw(node, database_service: Path, url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Spec 002's flow without asserting success: the completed node process."""
    return node(f"require({json.dumps(str(APPS / 'assistant_app.cjs'))})", cwd=tmp_path,
                env={"DATABASE_URL": url, "APP_MODULE": str(database_service), "SCENARIO": "flow",
                     "MINNO_FIELDS": str(MINNO_FIELDS)})


def test_assistant_reads_the_tokens_minnoctl_seed_encrypted(site, node, database_service, tmp_path):
    """The seed's user_tokens are encrypted by minnoctl (Python); the document's getUserTokens reads
    them and the Node client decrypts them to the seed file's plaintext."""
    seeded = json.loads((REPO / "migrations" / "assistant" / "seed" / "default.json").read_text()
                        )["tables"]["user_tokens"]
    row = next(r for r in seeded if isinstance(r.get("google_access_token"), dict)
               and isinstance(r.get("slack_access_token"), dict))
    out = assistant(node, site, database_service, tmp_path, "read", USER_ID=row["user_id"],
                    MINNO_MASTER_KEY=site.master_key)
    assert out["tokens"]["googleTokens"]["access_token"] != row["google_access_token"]["$encrypt"]
    assert out["plain"] == {c: row[c]["$encrypt"] if isinstance(row.get(c), dict) else None
                            for c in ("google_access_token", "google_refresh_token", "slack_access_token",
                                      "slack_refresh_token")}
    assert out["tokens"]["slackTokens"]["teamId"] == row["slack_team_id"]


def test_assistant_stores_tokens_encrypted_by_the_node_client_and_token_verify_passes(site, node, database_service,
                                                                                      tmp_path):
    user_id = f"U-enc-{uuid.uuid4().hex[:8]}"
    out = assistant(node, site, database_service, tmp_path, "storeEncrypted", USER_ID=user_id,
                    PLAINTEXT=json.dumps(PLAINTEXT), MINNO_MASTER_KEY=site.master_key)
    assert out["plain"] == PLAINTEXT
    with admin(site) as conn:
        row = conn.execute("SELECT google_access_token, slack_access_token, slack_team_id FROM assistant.user_tokens "
                           "WHERE user_id = %s", (user_id,)).fetchone()
        ring = crypto.Keyring.load(conn, crypto.MasterKey(crypto.parse_master_key(site.master_key, "key"), "test"))
    assert row[2] == "T0OUTSIDE" and PLAINTEXT["google_access_token"] not in row[0]
    assert ring.decrypt("assistant", "user_tokens", "google_access_token", user_id, row[0]).decode() \
        == PLAINTEXT["google_access_token"]
    verify = site.minnoctl("token", "verify", "--format", "json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout) == []


def migration_files(tmp_path: Path) -> str:
    """The document's example migration as the file runMigrations reads (its first line, a `//`
    comment naming the file, is the name, not SQL)."""
    head, _, sql = documents.code("002-migration-file").partition("\n")
    name = re.fullmatch(r"// Migration file example: (\S+\.sql)", head).group(1)
    (tmp_path / name).write_text(sql)
    return json.dumps([str(tmp_path / name)])


def test_assistant_run_migrations_with_allow_ddl_makes_its_table_and_stops_at_minnoctls(site, node,
                                                                                        database_service, tmp_path):
    """Spec 002's runMigrations over its example migration (003_create_user_tokens_table.sql, all IF
    NOT EXISTS), as the README's "Limits, on purpose" says: with --allow-ddl the app creates and owns
    its `migrations` table, and its DDL on minnoctl's tables stops at PostgreSQL's ownership check
    (42501 must be owner of table user_tokens; such changes belong in a minnoctl migration)."""
    owner = site.create_app("assistant", role="assistant_ddl_app", extra=("--allow-ddl",))
    out = assistant(node, site, database_service, tmp_path, "migrate", login=owner,
                    MIGRATION_FILES=migration_files(tmp_path))
    assert out["migrated"] is False and out["error"]["code"] == "42501", out
    assert out["error"]["message"] == "must be owner of table user_tokens", out
    with admin(site) as conn:
        owner_of = conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'assistant' "
                                "AND tablename = 'migrations'").fetchone()
    assert owner_of == (owner.role,)


def test_assistant_run_migrations_needs_allow_ddl(site, node, database_service, tmp_path):
    out = assistant(node, site, database_service, tmp_path, "migrate", MIGRATION_FILES=migration_files(tmp_path))
    assert out["migrated"] is False and out["error"]["code"] == "42501", out  # permission denied for schema


def test_assistant_storing_plaintext_tokens_is_refused_and_nothing_lands(site, node, database_service, tmp_path):
    user_id = f"U-plain-{uuid.uuid4().hex[:8]}"
    out = assistant(node, site, database_service, tmp_path, "storePlaintext", USER_ID=user_id,
                    PLAINTEXT=json.dumps(PLAINTEXT))
    assert out["stored"] is False, "the document's storeUserTokens wrote plaintext tokens and the database took them"
    error = out["error"]
    assert error["code"] == "MK002", error
    assert "google_access_token" in error["message"] and "minno-fields" in (error["message"] + (error["hint"] or ""))
    assert PLAINTEXT["google_access_token"] not in json.dumps(error)
    with admin(site) as conn:
        assert conn.execute("SELECT count(*) FROM assistant.user_tokens WHERE user_id = %s",
                            (user_id,)).fetchone()[0] == 0


def test_minno_app_decrypts_a_token_that_minnoctl_put(site, node, tmp_path):
    """`minnoctl token put` (minno.oauth_tokens), then spec 000's "Get Slack token for a workspace"
    through its Pool, decrypted with the Node client."""
    a = app(site, "minno")
    secret = f"xoxb-put-by-minnoctl-{uuid.uuid4().hex}"
    with admin(site) as conn:
        team, workspace = conn.execute("SELECT w.slack_team_id, w.id::text FROM minno.workspaces w JOIN "
                                       "minno.minno_sessions s ON s.workspace_id = w.id ORDER BY 1 LIMIT 1").fetchone()
    put = site.minnoctl("token", "put", "--workspace", team, "--provider", "slack", "--access-token-file", "-",
                        input=secret + "\n")
    assert put.returncode == 0, put.stderr
    assert secret not in put.stdout + put.stderr
    query = next(s for s in minno_queries(site, workspace) if "provider = 'slack'" in s)
    assert f"workspace_id = '{workspace}'" in query
    script = f"""const {{ Pool }} = require('pg');
const fields = require({json.dumps(str(MINNO_FIELDS))});
{pools_000()[1]}
(async () => {{
  const ring = await fields.loadKeyring(pool, fields.parseMasterKey(process.env.MINNO_MASTER_KEY));
  const {{ rows }} = await pool.query({json.dumps(query)});
  const t = rows[0];
  process.stdout.write(JSON.stringify({{ stored: t.access_token_encrypted,
    token: ring.decrypt('minno', 'oauth_tokens', 'access_token_encrypted', t.id, t.access_token_encrypted) }}));
  await pool.end();
}})().catch((e) => {{ console.error(e); process.exit(1); }});"""
    out = run_node(node, script, node_env(a, MINNO_MASTER_KEY=site.master_key), tmp_path)
    assert out["token"] == secret and secret not in out["stored"]


# ---------------------------------------------------------------------------------------------
# Spec 001: the Micro Chatbot Service's Drizzle schema and SQL


@pytest.fixture(scope="module")
def chatbot_schema(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec001") / "schema.js"
    path.write_text(transpile_typescript(documents.code("001-schema")))
    return path


def test_chatbot_drizzle_schema_inserts_and_selects(site, node, chatbot_schema, tmp_path):
    a = app(site, "chatbot")
    out = run_node(node, f"require({json.dumps(str(APPS / 'chatbot_app.cjs'))})",
                   node_env(a, SCHEMA_MODULE=str(chatbot_schema)), tmp_path)
    conversation = out["conversation"]
    assert re.fullmatch(r"[0-9a-f-]{36}", conversation["id"]) and conversation["metadata"]["source"] == "web-app"
    assert out["inserted"] == 3 and [c["id"] for c in out["mine"]] == [conversation["id"]]
    assert [m["role"] for m in out["history"]] == ["assistant", "user", "system"]
    assert out["history"][0]["metadata"] == {"model": "m"} and out["history"][1]["metadata"] == {}
    bad = out["badRole"]
    assert bad is not None, "the role CHECK took role 'robot'"
    assert bad["code"] == "23514", bad  # check_violation
    assert out["afterDelete"] == 0  # ON DELETE CASCADE


def test_chatbot_documented_sql_runs_unqualified(site, node, tmp_path):
    a = app(site, "chatbot")
    sql = [s for block in documents.piece("001-example-data") + documents.piece("001-common-queries")
           for s in statements(block.code)]
    results = run_sql(node, a, sql, tmp_path)
    if site.name == "citus":
        # the one statement of spec 001 a cluster refuses, as the README says ("Citus", what changes):
        # created_at is TIMESTAMP, NOW() a timestamptz, and Citus runs no DML on distributed tables
        # whose condition casts a column with a STABLE function; `minnoctl cleanup` does that retention
        refused = [(s, r["error"]) for s, r in zip(sql, results) if "error" in r]
        assert [(s.split()[0], e["code"]) for s, e in refused] == [("DELETE", "0A000")], refused
        assert "NOW() - INTERVAL '90 days'" in refused[0][0] and "STABLE" in refused[0][1]["message"]
        kept = [i for i, r in enumerate(results) if "error" not in r]
        sql, results = [sql[i] for i in kept], [results[i] for i in kept]
    assert_all_ran(results, sql)
    by_text = dict(zip(sql, results))
    with_messages = next(r for s, r in by_text.items() if "json_agg" in s)
    assert len(with_messages["rows"][0]["messages"]) == 4  # the example messages (the query comes before "Add Message")
    stats = next(r for s, r in by_text.items() if "message_count" in s)
    assert stats["rowCount"] >= 1


# ---------------------------------------------------------------------------------------------
# Spec 000: Minno core


def pools_000() -> list[str]:
    """The two node-postgres Pools of "Connection Security" (one block declaring `pool` twice: each
    runs on its own)."""
    block = documents.code("000-connection-security")
    snippets = [s for s in re.split(r"\n\s*\n", block) if "new Pool" in s]
    assert len(snippets) == 2, block
    return snippets


def minno_queries(site: Site, workspace: str | None = None) -> list[str]:
    """Every Common Queries statement of spec 000, its '...' placeholders filled with seeded ids."""
    with admin(site) as conn:
        ws, session = conn.execute(
            # a join, not a correlated EXISTS: Citus plans no correlated subquery over a reference table
            "SELECT s.workspace_id, s.id FROM minno.minno_sessions s "
            "LEFT JOIN (SELECT DISTINCT session_id FROM minno.conversation_messages) m ON m.session_id = s.id "
            "WHERE (s.workspace_id = %s::uuid OR %s::uuid IS NULL) "
            "ORDER BY m.session_id IS NOT NULL DESC, s.id LIMIT 1", (workspace, workspace)).fetchone()
    out = []
    for block in documents.piece("000-common-queries"):
        for s in statements(block.code):
            s = s.replace("workspace_id = '...'", f"workspace_id = '{ws}'")
            out.append(s.replace("session_id = '...'", f"session_id = '{session}'"))
    assert not any("'...'" in s for s in out)
    return out


@pytest.mark.parametrize("variant", [0, 1], ids=["production-ssl", "development"])
def test_minno_common_queries_through_the_documented_pools(site, node, tmp_path, variant):
    if variant == 0 and not site.cluster.ssl:
        pytest.skip("the embedded PostgreSQL 18 is built without SSL, which this pool requires")
    a = app(site, "minno")
    sql = minno_queries(site)
    results = run_sql(node, a, sql, tmp_path, pool=pools_000()[variant])
    assert_all_ran(results, sql)
    assert any(r["rowCount"] > 0 for s, r in zip(sql, results) if "FROM conversation_messages" in s)
    assert any(r["rowCount"] > 0 for s, r in zip(sql, results) if "FROM oauth_tokens" in s)


def test_minno_optional_audit_log_needs_allow_ddl(site, node, tmp_path):
    """Spec 000's optional audit_log: minnoctl does not create it; a plain app login may not either
    (least privilege); with --allow-ddl the app creates it in its own schema and writes to it."""
    with admin(site) as conn:
        assert conn.execute("SELECT to_regclass('minno.audit_log')").fetchone()[0] is None
    ddl = statements(documents.code("000-audit-log"))
    plain = run_sql(node, app(site, "minno"), ddl, tmp_path)
    assert plain[0].get("error", {}).get("code") == "42501", plain  # insufficient_privilege
    owner = site.create_app("minno", role="minno_ddl_app", extra=("--allow-ddl",))
    insert = "INSERT INTO audit_log (table_name, operation, user_id, changed_data) " \
             "VALUES ('workspaces', 'UPDATE', 'U1', '{\"name\": \"x\"}')"
    check = ["SELECT count(*)::int AS n FROM audit_log",
             "SELECT relnamespace::regnamespace::text AS t FROM pg_class WHERE oid = 'audit_log'::regclass"]
    results = run_sql(node, owner, [*ddl, insert, *check], tmp_path)  # rolled back: the shared database stays
    assert_all_ran(results, [*ddl, insert, *check])
    assert results[-2]["rows"] == [{"n": 1}] and results[-1]["rows"] == [{"t": "minno"}]


SEED_D = "helper D: `minnoctl seed` must leave tables the migrations did not create (spec 000's audit_log, " \
         "spec 002's migrations)"


def run_migrations_ddl() -> str:
    """The CREATE TABLE of spec 002's runMigrations (the SQL string in its TypeScript)."""
    found = re.search(r"`\s*(CREATE TABLE IF NOT EXISTS migrations .*?)\s*`", documents.code("002-run-migrations"),
                      re.S)
    return found.group(1)


def test_seed_leaves_the_rows_of_tables_the_apps_created(site, node, tmp_path):
    """On a database of its own (seed replaces every module's data): with --allow-ddl, spec 000's app
    creates its optional audit_log and spec 002's its `migrations`, each writes a row; `minnoctl
    seed` again keeps both."""
    dbname = f"apps_seed_{uuid.uuid4().hex[:8]}"
    init = site.minnoctl("db", "init", "--modules", "minno,assistant", "--yes", dbname=dbname)
    assert init.returncode == 0, init.stderr
    folder = tmp_path / "seeded"
    folder.mkdir()
    tag = uuid.uuid4().hex[:6]
    minno = site.create_app("minno", role=f"minno_audit_{tag}", extra=("--allow-ddl",), dbname=dbname, folder=folder)
    helper = site.create_app("assistant", role=f"assistant_mig_{tag}", extra=("--allow-ddl",), dbname=dbname,
                             folder=folder)
    sql = [*statements(documents.code("000-audit-log")),
           "INSERT INTO audit_log (table_name, operation) VALUES ('workspaces', 'DELETE')"]
    assert_all_ran(run_sql(node, minno, sql, tmp_path, rollback=False), sql)
    sql = [run_migrations_ddl(), "INSERT INTO migrations (filename) VALUES ('003_create_user_tokens_table.sql')"]
    assert_all_ran(run_sql(node, helper, sql, tmp_path, rollback=False), sql)
    seed = site.minnoctl("seed", "--yes", dbname=dbname)
    assert seed.returncode == 0, seed.stderr
    with admin(site, dbname) as conn:
        assert conn.execute("SELECT count(*) FROM minno.workspaces").fetchone()[0] > 0
        kept = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("minno.audit_log",
                                                                                  "assistant.migrations")]
    assert kept == [1, 1], SEED_D
    verify = site.minnoctl("migrate", "verify", "--format", "json", dbname=dbname)  # an app's own table is no drift
    assert verify.returncode == 0 and json.loads(verify.stdout) == [], verify.stdout + verify.stderr


# ---------------------------------------------------------------------------------------------
# Spec 003: supervisor-service (supervisor + knowledge, one login)


_ranges = itertools.count()


def supervisor_project(site: Site, node, tmp_path: Path) -> tuple[str, str]:
    """A project and a port range of the app's own (50000 and up, clear of the seeded ranges), made by
    the app and kept: the tests using them run in later node processes."""
    a = app(site, "supervisor")
    tag = uuid.uuid4().hex[:8]
    start = 50000 + 10 * next(_ranges)
    res = run_sql(node, a, [
        {"text": "INSERT INTO projects (name, path, description) VALUES ($1, $2, 'outside-in') RETURNING id::text",
         "params": [f"proj-{tag}", f"/srv/proj-{tag}"]},
        {"text": "INSERT INTO port_ranges (range_name, start_port, end_port, description) "
                 "VALUES ($1, $2, $3, 'outside-in') RETURNING id::text",
         "params": [f"range-{tag}", start, start + 9]},
    ], tmp_path, rollback=False)
    assert_all_ran(res, ["INSERT INTO projects", "INSERT INTO port_ranges"])
    return res[0]["rows"][0]["id"], res[1]["rows"][0]["id"]


def test_supervisor_port_functions_and_views(site, node, tmp_path):
    a = app(site, "supervisor")
    project, port_range = supervisor_project(site, node, tmp_path)
    p = [port_range]
    sql = [
        {"text": "SELECT find_available_port($1, 'localhost', 'tcp') AS port", "params": p},
        {"text": "SELECT allocate_port($1, $2, 'api', 'http', 'localhost', 'tcp') AS port",
         "params": [project, port_range]},
        {"text": "SELECT allocate_port($1, $2, 'worker', 'http', 'localhost', 'tcp') AS port",
         "params": [project, port_range]},
        {"text": "SELECT find_available_port($1, 'localhost', 'tcp') AS port", "params": p},
        {"text": "SELECT allocated_ports, total_ports FROM port_range_utilization WHERE range_id = $1", "params": p},
        {"text": "SELECT port_number, service_name, project_name FROM active_port_allocations "
                 "WHERE range_name = (SELECT range_name FROM port_ranges WHERE id = $1) ORDER BY port_number",
         "params": p},
        {"text": "SELECT release_port((SELECT min(port_number) FROM port_allocations WHERE port_range_id = $1), "
                 "'localhost') AS released", "params": p},
        {"text": "INSERT INTO port_reservations (project_id, port_range_id, port_number, service_name, reserved_by, "
                 "created_at, expires_at) VALUES ($1, $2, (SELECT end_port FROM port_ranges WHERE id = $2), "
                 "'later', 'test', now() - interval '2 minutes', now() - interval '1 minute')",
         "params": [project, port_range]},
        {"text": "SELECT cleanup_expired_reservations() AS deleted"},
        {"text": "SELECT released_ports FROM port_range_utilization WHERE range_id = $1", "params": p},
    ]
    r = run_sql(node, a, sql, tmp_path)
    assert_all_ran(r, sql)
    first = r[0]["rows"][0]["port"]
    assert r[1]["rows"][0]["port"] == first and r[2]["rows"][0]["port"] == first + 1
    assert r[3]["rows"][0]["port"] == first + 2
    assert r[4]["rows"][0]["allocated_ports"] in (2, "2") and r[4]["rows"][0]["total_ports"] in (10, "10")
    assert [row["service_name"] for row in r[5]["rows"]] == ["api", "worker"]
    assert r[6]["rows"][0]["released"] is True
    assert r[8]["rows"][0]["deleted"] >= 1
    assert r[9]["rows"][0]["released_ports"] in (1, "1")


def test_supervisor_task_timing_functions_and_views(site, node, tmp_path):
    a = app(site, "supervisor")
    project, _ = supervisor_project(site, node, tmp_path)
    task = {"text": "INSERT INTO tasks (project_id, title, estimated_minutes) VALUES ($1, 'write tests', 60) "
                    "RETURNING id::text", "params": [project]}
    r = run_sql(node, a, [task], tmp_path, rollback=False)
    assert_all_ran(r, [task])
    task_id = r[0]["rows"][0]["id"]
    sql = [
        {"text": "INSERT INTO task_executions (task_id, project_id, execution_number, started_at, completed_at, "
                 "estimated_minutes, status, complexity) VALUES ($1, $2, 1, now() - interval '90 minutes', now(), "
                 "60, 'completed', 'moderate') RETURNING duration_minutes, variance_minutes",
         "params": [task_id, project]},
        *({"text": "SELECT sample_count FROM update_estimation_pattern($1, 'testing', 'moderate', $2)",
           "params": [project, m]} for m in (80, 90, 100)),
        {"text": "SELECT get_recommended_estimate($1, 'testing', 'moderate') AS minutes", "params": [project]},
        {"text": "SELECT total_executions FROM estimation_accuracy_by_project WHERE project_id = $1",
         "params": [project]},
        {"text": "SELECT * FROM task_performance_trends WHERE project_id = $1", "params": [project]},
    ]
    r = run_sql(node, a, sql, tmp_path)
    assert_all_ran(r, sql)
    assert r[0]["rows"][0]["duration_minutes"] == 90 and r[0]["rows"][0]["variance_minutes"] == 30
    assert [x["rows"][0]["sample_count"] for x in r[1:4]] == [1, 2, 3]
    assert r[4]["rows"][0]["minutes"] == 90
    assert r[5]["rows"][0]["total_executions"] in (1, "1")


def test_supervisor_secrets_through_the_node_client(site, node, tmp_path):
    """Spec 003's secrets management, encrypted in the application (the README of the documents):
    the app encrypts with the Node client, names the data key in encryption_key_id (its id, looked up
    by the field's key number), reads it back through its views; `minnoctl token verify` passes."""
    a = app(site, "supervisor")
    project, _ = supervisor_project(site, node, tmp_path)
    value = f"sk-live-outside-in-{uuid.uuid4().hex}"
    script = f"""const {{ Pool }} = require('pg');
const crypto = require('node:crypto');
const fields = require({json.dumps(str(MINNO_FIELDS))});
(async () => {{
  const pool = new Pool({{ connectionString: process.env.DATABASE_URL }});
  const ring = await fields.loadKeyring(pool, fields.parseMasterKey(process.env.MINNO_MASTER_KEY));
  const id = crypto.randomUUID();
  const field = ring.encrypt('supervisor', 'secrets', 'encrypted_value', id, process.env.SECRET);
  const key = await pool.query('SELECT id FROM minno.encryption_keys WHERE key_number = $1', [ring.keyNumber(field)]);
  await pool.query(`INSERT INTO secrets (id, project_id, key_name, encrypted_value, encryption_key_id, secret_type,
                     expires_at) VALUES ($1, $2, 'STRIPE_KEY', $3, $4, 'api_key', now() + interval '10 days')`,
                   [id, process.env.PROJECT, field, key.rows[0].id]);
  await pool.query(`INSERT INTO secret_rotation_schedule (secret_id, rotation_interval_days, next_rotation_at)
                    VALUES ($1, 90, now() + interval '3 days')`, [id]);
  const back = (await pool.query('SELECT encrypted_value FROM secrets WHERE id = $1', [id])).rows[0];
  const expiring = await pool.query('SELECT key_name FROM secrets_expiring_soon WHERE project_id = $1',
                                    [process.env.PROJECT]);
  const rotating = await pool.query('SELECT key_name FROM secrets_needing_rotation WHERE project_id = $1',
                                    [process.env.PROJECT]);
  process.stdout.write(JSON.stringify({{ field: back.encrypted_value,
    plain: ring.decrypt('supervisor', 'secrets', 'encrypted_value', id, back.encrypted_value),
    expiring: expiring.rows, rotating: rotating.rows }}));
  await pool.end();
}})().catch((e) => {{ console.error(e); process.exit(1); }});"""
    out = run_node(node, script, node_env(a, MINNO_MASTER_KEY=site.master_key, SECRET=value, PROJECT=project),
                   tmp_path)
    assert out["plain"] == value and value not in out["field"]
    assert out["expiring"] == [{"key_name": "STRIPE_KEY"}] and out["rotating"] == [{"key_name": "STRIPE_KEY"}]
    verify = site.minnoctl("token", "verify", "--format", "json")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_supervisor_secret_encrypted_the_documents_way_is_refused(site, node, tmp_path):
    """Spec 003 says "Use pgcrypto functions for encrypting sensitive data"; minnoctl keeps keys off
    the server (../shared/spec/README.md), so a pgcrypto (or plaintext) value in secrets.encrypted_value
    is refused with MK002 naming the column and the client libraries, and nothing lands."""
    a = app(site, "supervisor")
    project, _ = supervisor_project(site, node, tmp_path)
    value = "armor(pgp_sym_encrypt('sk-live-1', 'passphrase'))" if "pgcrypto" in site.extensions else "'sk-live-1'"
    sql = [{"text": "INSERT INTO secrets (project_id, key_name, encrypted_value, encryption_key_id) "
                    f"VALUES ($1, 'PGCRYPTO_KEY', {value}, (SELECT id FROM minno.encryption_keys "
                    "WHERE status = 'active'))", "params": [project]}]
    r = run_sql(node, a, sql, tmp_path, rollback=False)
    error = r[0].get("error") or {}
    assert error.get("code") == "MK002", r
    assert "encrypted_value" in error["message"] and "sk-live-1" not in json.dumps(error)
    with admin(site) as conn:
        left = conn.execute("SELECT count(*) FROM supervisor.secrets WHERE key_name = 'PGCRYPTO_KEY'").fetchone()
    assert left == (0,)


def test_supervisor_uuid_ossp_and_pgcrypto_or_the_one_line_message(site, node, tmp_path):
    a = app(site, "supervisor")
    sql = ["SELECT uuid_generate_v4() AS id", "SELECT encode(digest('x', 'sha256'), 'hex') AS h",
           "SELECT length(gen_random_bytes(16)) AS n"]
    r = run_sql(node, a, sql, tmp_path)
    missing = {"uuid-ossp", "pgcrypto"} - site.extensions
    if not missing:
        assert_all_ran(r, sql)
        assert re.fullmatch(r"[0-9a-f-]{36}", r[0]["rows"][0]["id"]) and r[2]["rows"][0]["n"] == 16
    else:
        lines = [ln for ln in site.init.stderr.splitlines() if all(m in ln for m in missing)]
        assert len(lines) == 1 and "ask" in lines[0] and "supervisor" in lines[0], site.init.stderr
        if "uuid-ossp" in missing:
            assert r[0]["error"]["code"] == "42883", r  # undefined_function, as the init line said


def test_knowledge_learnings_functions(site, node, tmp_path):
    if not site.has_vector:
        pytest.skip(f"{site.name} has no pgvector: the knowledge module is not installed there")
    a = app(site, "supervisor")
    project, _ = supervisor_project(site, node, tmp_path)

    def vec(*hot: int) -> str:
        v = [0.0] * 1536
        for i in hot:
            v[i] = 1.0
        return "[" + ",".join(map(str, v)) + "]"

    setup = [
        {"text": "INSERT INTO knowledge_sources (project_id, source_type, source_id, title) "
                 "VALUES ($1, 'doc', $2, 'outside-in') RETURNING id::text", "params": [project, f"src-{project}"]},
    ]
    r = run_sql(node, a, setup, tmp_path, rollback=False)
    assert_all_ran(r, setup)
    source = r[0]["rows"][0]["id"]
    sql = [
        {"text": "INSERT INTO knowledge_chunks (source_id, project_id, chunk_index, content, content_hash, embedding) "
                 "VALUES ($1, $2, 0, 'ports are leased', encode(sha256('ports are leased'), 'hex'), $3::vector)",
         "params": [source, project, vec(0)]},
        {"text": "INSERT INTO learnings (project_id, title, content, learning_type, category, embedding) "
                 "VALUES ($1, 'lease ports', 'always lease ports', 'best_practice', 'ops', $2::vector) "
                 "RETURNING id::text", "params": [project, vec(0, 1)]},
        {"text": "SELECT * FROM search_knowledge_chunks($1::vector, $2, 5, 0.5)", "params": [vec(0), project]},
        {"text": "SELECT * FROM search_learnings($1::vector, $2, 'ops', 5, 0.5)", "params": [vec(0, 1), project]},
        {"text": "SELECT * FROM find_similar_learnings($1::vector, $2, 0.9)", "params": [vec(0, 1), project]},
        {"text": "SELECT increment_learning_usage((SELECT id FROM learnings WHERE project_id = $1)) AS ok",
         "params": [project]},
        {"text": "SELECT usage_count FROM learnings WHERE project_id = $1", "params": [project]},
        {"text": "SELECT * FROM learning_effectiveness LIMIT 1"},
        {"text": "SELECT * FROM knowledge_coverage_by_project WHERE project_id = $1", "params": [project]},
    ]
    r = run_sql(node, a, sql, tmp_path)
    assert_all_ran(r, sql)
    assert [x["content"] for x in r[2]["rows"]] == ["ports are leased"]
    assert [x["title"] for x in r[3]["rows"]] == ["lease ports"]
    assert [x["title"] for x in r[4]["rows"]] == ["lease ports"]
    assert r[5]["rows"][0]["ok"] is True and r[6]["rows"][0]["usage_count"] == 1


# ---------------------------------------------------------------------------------------------
# Spec 004: the Slackbot, SQLAlchemy async over asyncpg, and psycopg


def asyncpg_url(a: App) -> str:
    """The env file's URL as spec 004 writes DATABASE_URL: `postgresql+asyncpg://user:password@host:port/db`."""
    written = documents.code("004-environment")
    assert 'DATABASE_URL="postgresql+asyncpg://' in written
    return re.sub(r"^postgres(?:ql)?://", "postgresql+asyncpg://", a.url)


def test_slackbot_sqlalchemy_asyncpg(site):
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = asyncpg_url(app(site, "slackbot"))
    maintenance = statements(documents.code("004-maintenance"))
    monitoring = statements(documents.code("004-monitoring")) + ["SELECT * FROM active_sessions"]
    user = f"U{uuid.uuid4().hex[:10].upper()}"

    async def run() -> dict:
        engine = create_async_engine(url, pool_size=2)
        try:
            async with engine.begin() as conn:
                session_id = (await conn.execute(text(
                    "INSERT INTO user_sessions (slack_user_id, slack_channel_id, slack_team_id, current_database, "
                    "preferences) VALUES (:u, 'C123', 'T123', 'ANALYTICS', CAST(:prefs AS jsonb)) RETURNING id"),
                    {"u": user, "prefs": json.dumps({"theme": "dark"})})).scalar_one()
                query_id = (await conn.execute(text(
                    "INSERT INTO query_history (session_id, original_question, generated_query, database_name, "
                    "status, execution_time_ms, row_count) VALUES (:s, 'What are our top products?', "
                    "'SELECT product_name, SUM(sales) FROM products GROUP BY product_name', 'SALES_DB', 'success', "
                    "1250, 150) RETURNING id"), {"s": session_id})).scalar_one()
                await conn.execute(text(
                    "UPDATE query_history SET status = 'success', query_result = CAST(:r AS jsonb), "
                    "snowflake_query_id = '01234567-89ab-cdef-0123-456789abcdef', completed_at = now() "
                    "WHERE id = :q"), {"r": json.dumps({"data": [1], "columns": ["a"]}), "q": query_id})
                await conn.execute(text(
                    "INSERT INTO query_cache (query_hash, original_query, normalized_query, result_data, expires_at) "
                    "VALUES (:h, 'SELECT * FROM users', 'select * from users', CAST(:d AS jsonb), "
                    "now() + interval '1 hour')"), {"h": uuid.uuid4().hex, "d": json.dumps({"rows": []})})
                await conn.execute(text(
                    "INSERT INTO audit_logs (event_type, event_category, event_description, slack_user_id, event_data) "
                    "VALUES ('user_login', 'security', 'User logged in successfully', :u, CAST(:d AS jsonb))"),
                    {"u": user, "d": json.dumps({"login_method": "oauth", "ip_address": "192.168.1.1"})})
            async with engine.begin() as conn:
                done = [(await conn.execute(text(s))).scalar_one() for s in maintenance]
                views = [(await conn.execute(text(s))).mappings().all() for s in monitoring]
                mine = (await conn.execute(text("SELECT count(*) FROM query_history qh JOIN user_sessions us "
                                                "ON us.id = qh.session_id WHERE us.slack_user_id = :u"),
                                           {"u": user})).scalar_one()
            return {"done": done, "views": views, "mine": mine}
        finally:
            await engine.dispose()

    out = asyncio.run(run())
    assert all(isinstance(n, int) for n in out["done"]) and len(out["done"]) == 3
    # the same DATABASE_URL, as spec 004 writes it, read by minnoctl too (a liveness probe with the app's login)
    health = site.minnoctl("health", "--live", env={"MINNO_DATABASE_URL": url})
    assert health.returncode == 0, health.stdout + health.stderr
    assert out["mine"] == 1
    assert any(row["slack_user_id"] == user for row in out["views"][-1])  # active_sessions


def test_slackbot_psycopg(site):
    a = app(site, "slackbot")
    sql = statements(documents.code("004-maintenance")) + statements(documents.code("004-monitoring"))
    with psycopg.connect(a.url) as conn:
        for s in sql:
            conn.execute(s).fetchall()
        conn.execute("INSERT INTO user_mappings (slack_user_id, slack_team_id, slack_username) "
                     "VALUES (%s, 'T123', 'outside-in')", (f"U{uuid.uuid4().hex[:8]}",))
        conn.rollback()


# ---------------------------------------------------------------------------------------------
# One system's login cannot read another's secrets


@pytest.mark.parametrize("name, statement", [
    ("assistant", "SELECT * FROM minno.oauth_tokens LIMIT 1"),
    ("assistant", "SELECT * FROM supervisor.secrets LIMIT 1"),
    ("assistant", "UPDATE minno.encryption_keys SET status = status"),  # reads the keyring, never writes it
    ("chatbot", "SELECT * FROM minno.encryption_keys LIMIT 1"),
    ("chatbot", "SELECT * FROM assistant.user_tokens LIMIT 1"),
    ("slackbot", "SELECT * FROM supervisor.secrets LIMIT 1"),
    ("supervisor", "SELECT * FROM assistant.user_tokens LIMIT 1"),
    ("minno", "DELETE FROM minno.encryption_keys"),
])
def test_one_systems_login_cannot_touch_another_modules_secrets_or_the_keyring(site, name, statement):
    a = app(site, name)
    with psycopg.connect(a.url) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            conn.execute(statement)


# ---------------------------------------------------------------------------------------------
# Through PgBouncer in transaction pooling: the search_path is the role's setting, no session SET


@pytest.fixture(scope="module")
def bouncer(site: Site, tmp_path_factory: pytest.TempPathFactory):
    """PgBouncer in transaction pooling (one server connection per role) in front of the site, with
    scram passwords: the assistant's and the chatbot's logins. Spec 002's Pool sends statement_timeout
    as a startup parameter, which PgBouncer refuses (08P01 "unsupported startup parameter:
    statement_timeout") unless told to ignore it, as an operator running that app must: the
    timeout then belongs on the role (ALTER ROLE ... SET statement_timeout)."""
    from test_pgbouncer import PGBOUNCER, Bouncer

    if not os.path.exists(PGBOUNCER):
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is missing in CI: .ci/run must install it")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")

    class AppBouncer(Bouncer):
        def url(self, dbname: str) -> str:  # its readiness probe, as the superuser
            return f"postgresql://postgres:admin@127.0.0.1:{self.port}/{dbname}"

    b = AppBouncer(tmp_path_factory.mktemp(f"pgbouncer-{site.name}"), site.cluster.port, "transaction")
    logins = [app(site, name) for name in ("assistant", "chatbot")]
    (b.folder / "users.txt").write_text('"postgres" "admin"\n' + "".join(
        f'"{a.role}" "{a.password.replace(chr(34), chr(34) * 2)}"\n' for a in logins))
    ini = b.folder / "pgbouncer.ini"
    ini.write_text(ini.read_text().replace("auth_type = trust", "auth_type = scram-sha-256\n"
                                           "ignore_startup_parameters = statement_timeout"))
    b.start()
    yield b
    b.stop()


def through(bouncer, a: App) -> str:
    """The app's URL with the pooler's port instead of the server's (PgBouncer has no client TLS here:
    the `postgres://` spelling, see no_ssl_spelling)."""
    return no_ssl_spelling(a.url.replace(f"127.0.0.1:{urlsplit(a.url).port}/", f"127.0.0.1:{bouncer.port}/"))


def test_the_apps_work_through_pgbouncer_transaction_pooling(site, bouncer, node, database_service, chatbot_schema,
                                                              tmp_path):
    out = assistant(node, site, database_service, tmp_path, "flow", url=through(bouncer, app(site, "assistant")))
    assert out["resolved"]["status"] == "confirmed" and out["health"]["healthy"] is True
    chatbot = app(site, "chatbot")
    out = run_node(node, f"require({json.dumps(str(APPS / 'chatbot_app.cjs'))})",
                   {"DATABASE_URL": through(bouncer, chatbot), "SCHEMA_MODULE": str(chatbot_schema)}, tmp_path)
    assert out["inserted"] == 3 and out["badRole"]["code"] == "23514"
    with psycopg.connect(through(bouncer, chatbot), prepare_threshold=None, autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0].startswith("chatbot")


# ---------------------------------------------------------------------------------------------
# On the embedded server itself: its unix socket in the URL


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_apps_reach_the_embedded_server_through_the_url_app_create_writes(migrated, run_minnoctl, node,
                                                                          chatbot_schema, tmp_path):
    """The embedded PostgreSQL listens on a unix socket only; the env file's URL names it
    (`?host=/dir&port=N`) and each driver must follow it: node-postgres with drizzle (spec 001),
    asyncpg through SQLAlchemy and psycopg (spec 004)."""
    env = {"MINNO_DATABASE_URL": migrated}
    made, tag = {}, uuid.uuid4().hex[:6]  # roles are server-wide and the suite shares this server: own names
    try:
        for module in ("chatbot", "slackbot"):
            result = run_minnoctl("app", "create", module, "--role", f"{module}_e2e_{tag}", "--format", "json",
                                  env=env)
            assert result.returncode == 0, result.stderr
            record = json.loads(result.stdout)[0]
            made[module] = read_env_file(Path(record["env_file"]))["DATABASE_URL"]
        assert "host=" in urlsplit(made["chatbot"]).query, made["chatbot"]  # the socket directory
        embedded_apps(node, made, chatbot_schema, tmp_path)
    finally:
        for module in made:
            run_minnoctl("app", "drop", f"{module}_e2e_{tag}", "--yes", env=env)


def embedded_apps(node, made: dict[str, str], chatbot_schema: Path, tmp_path: Path) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    out = run_node(node, f"require({json.dumps(str(APPS / 'chatbot_app.cjs'))})",
                   {"DATABASE_URL": made["chatbot"], "SCHEMA_MODULE": str(chatbot_schema)}, tmp_path)
    assert out["inserted"] == 3 and out["badRole"]["code"] == "23514"
    with psycopg.connect(made["slackbot"]) as conn:
        assert conn.execute("SELECT cleanup_expired_cache()").fetchone()[0] == 0

    async def via_asyncpg() -> int:
        engine = create_async_engine(re.sub(r"^postgres(?:ql)?://", "postgresql+asyncpg://", made["slackbot"]))
        try:
            async with engine.connect() as conn:
                return (await conn.execute(text("SELECT cleanup_expired_sessions(24)"))).scalar_one()
        finally:
            await engine.dispose()

    assert asyncio.run(via_asyncpg()) == 0


# ---------------------------------------------------------------------------------------------
# The grants hold after later migrations


def slackbot_database(site: Site, tmp_path: Path) -> tuple[str, App]:
    """A database of its own with the slackbot module (and minno), and the slackbot's login."""
    dbname = f"apps_grants_{uuid.uuid4().hex[:8]}"
    init = site.minnoctl("db", "init", "--modules", "slackbot", "--yes", dbname=dbname)
    assert init.returncode == 0, init.stderr
    folder = tmp_path / "grants"
    folder.mkdir()
    return dbname, site.create_app("slackbot", role=f"slackbot_grants_{uuid.uuid4().hex[:6]}", dbname=dbname,
                                   folder=folder)


def slackbot_maintenance(node, a: App, tmp_path: Path) -> None:
    """Spec 004's maintenance functions over an old audit log row the app writes: moved to the archive."""
    sql = ["INSERT INTO audit_logs (event_type, event_category, event_description, created_at) "
           "VALUES ('user_login', 'security', 'old', now() - interval '100 days')",
           *statements(documents.code("004-maintenance")),
           "SELECT count(*)::int AS n FROM audit_logs_archive"]
    r = run_sql(node, a, sql, tmp_path)
    assert_all_ran(r, sql)
    assert r[-1]["rows"] == [{"n": 1}]


def test_an_apps_grants_hold_on_objects_a_later_migration_creates(site, node, tmp_path):
    """Roll back spec 004's maintenance migration (audit_logs_archive and the cleanup functions)
    and apply it again after `app create`: the slackbot's own archive_old_audit_logs(90), run as
    the app, must still move an old row into the recreated audit_logs_archive."""
    dbname, a = slackbot_database(site, tmp_path)
    with admin(site, dbname) as conn:
        last = conn.execute("SELECT to_regclass('slackbot.audit_logs_archive')").fetchone()[0]
    assert last is not None
    back = site.minnoctl("migrate", "rollback", "--steps", "1", "--yes", dbname=dbname)
    assert back.returncode == 0, back.stderr
    with admin(site, dbname) as conn:
        assert conn.execute("SELECT to_regclass('slackbot.audit_logs_archive')").fetchone()[0] is None, \
            "the last migration was not slackbot's maintenance one"
    again = site.minnoctl("migrate", dbname=dbname)
    assert again.returncode == 0, again.stderr
    slackbot_maintenance(node, a, tmp_path)


def test_an_apps_login_after_db_init_force_and_app_create_again(site, node, tmp_path):
    """A development reset (`db init --force`) drops minnoctl.app_roles with minnoctl's schemas; the
    README says to run `minnoctl app create` again: with the same role it keeps the password, so the
    app's env file works on the rebuilt tables as before."""
    dbname, a = slackbot_database(site, tmp_path)
    slackbot_maintenance(node, a, tmp_path)
    force = site.minnoctl("db", "init", "--force", "--modules", "slackbot", "--yes", dbname=dbname)
    assert force.returncode == 0, force.stderr
    again = site.minnoctl("app", "create", "slackbot", "--role", a.role, "--format", "json", dbname=dbname,
                          cwd=a.env_file.parent)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["password"] == "unchanged"
    assert read_env_file(a.env_file)["DATABASE_URL"] == a.url
    slackbot_maintenance(node, a, tmp_path)

# ---------------------------------------------------------------------------------------------
# After a key rotation (last: it re-encrypts every field the tests above wrote, Node's included)


def test_the_apps_read_their_fields_after_minnoctl_token_rotate(site, node, database_service, tmp_path):
    seeded = json.loads((REPO / "migrations" / "assistant" / "seed" / "default.json").read_text()
                        )["tables"]["user_tokens"]
    row = next(r for r in seeded if isinstance(r.get("google_access_token"), dict))
    rotate = site.minnoctl("token", "rotate", "--format", "json")
    assert rotate.returncode == 0, rotate.stdout + rotate.stderr
    done = json.loads(rotate.stdout)
    assert done["status"] == "done" and done["retired"], done
    out = assistant(node, site, database_service, tmp_path, "read", USER_ID=row["user_id"],
                    MINNO_MASTER_KEY=site.master_key)
    assert out["plain"]["google_access_token"] == row["google_access_token"]["$encrypt"]
    with admin(site) as conn:
        keys = dict(conn.execute("SELECT key_number, status FROM minno.encryption_keys").fetchall())
        field = conn.execute("SELECT google_access_token FROM assistant.user_tokens WHERE user_id = %s",
                             (row["user_id"],)).fetchone()[0]
        stale = conn.execute("SELECT count(*) FROM supervisor.secrets s JOIN minno.encryption_keys k "
                             "ON k.id = s.encryption_key_id WHERE k.status <> 'active'").fetchone()[0]
    assert keys[crypto.field_key_number(field)] == "active" and stale == 0
    verify = site.minnoctl("token", "verify", "--format", "json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    listed = site.minnoctl("app", "list", "--format", "json")  # after everything the apps did here
    assert listed.returncode == 0, listed.stdout + listed.stderr
    roles = {r["role"]: r for r in json.loads(listed.stdout)}
    assert {a.role for a in site.apps.values()} <= set(roles)
    # every grant in place; spec 002's `migrations`, which assistant_ddl_app's runMigrations made
    # above, is that app's own table: not expected of the module's other logins
    for r in roles.values():
        assert not r["extra"] and not r["missing"] and r["status"] == "complete", r
