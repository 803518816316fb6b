"""The targets file: named databases, groups of them, and databases found on a server.

A fleet (tenant databases, one database per region, a primary and its reporting copy) is written
down once, in TOML, and named on the command line: `--target NAME`, `--group NAME`, `--all-targets`.

    # minnoctl.toml
    [targets.main]
    url = "postgresql://minno_admin@db1.internal:5432/minno"
    password_env = "MINNO_MAIN_PASSWORD"      # or password_file = "...", or passfile = "..."
    tags = ["production", "eu"]

    [targets.reporting]
    service = "reporting"                     # an entry of the libpq service file
    direct_url = "postgresql://minno_admin@db3.internal:5432/minno"   # when service is a transaction pool

    [targets.tenants]
    url = "postgresql://minno_admin@db2.internal/postgres"
    passfile = "~/.pgpass"
    discover = "tenant_%"                     # every database on that server LIKE 'tenant_%'
    # discover_query = "SELECT name FROM registry.tenants WHERE active"   (the same, by a query)

    [groups]
    eu = ["main", "tag:eu"]                   # target names and tags

Where it is: MINNOCTL_TARGETS (a path), else `minnoctl.toml` in the working directory or the
nearest folder above it that has one, else `minnoctl.toml` in the user's config directory
(~/.config/minnoctl). Secrets are never written in it: a URL with a password in it is refused (the
file is one `git add` from a repository); a password comes by reference — the variable
`password_env` names (the environment or .env), the file `password_file` names (its first line),
or libpq's `passfile`.

A discovering target stands for every database its query finds on that server, each a target of
its own named `<target>/<database>` (`--target tenants` is all of them, `--target tenants/tenant_07`
one). The query runs read-only, under a statement timeout, on the target's own database.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Mapping

from minnoctl.errors import ConfigError, UsageError
from minnoctl.render_text import shown

FILE_NAME = "minnoctl.toml"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
TARGET_KEYS = {"url", "service", "direct_url", "password_env", "password_file", "passfile", "tags", "discover",
               "discover_query", "description"}
DISCOVER_TIMEOUT = "10s"
SECRET_REFERENCES = ("password_env", "password_file", "passfile")


@dataclass(frozen=True)
class Target:
    """One database the file names (or a discovery found). `conninfo` never holds a password."""

    name: str
    conninfo: str  # the URL or libpq key=value string, as written (a discovered one: dbname set)
    tags: tuple[str, ...] = ()
    password_env: str | None = None
    password_file: str | None = None
    passfile: str | None = None
    discover: str | None = None  # a LIKE pattern over pg_database.datname
    discover_query: str | None = None
    description: str = ""
    parent: str | None = None  # the discovering target a discovered one came from
    params: Mapping[str, str] = field(default_factory=dict)  # conninfo's libpq keywords
    direct_url: str | None = None  # the server itself when `url` is a transaction pool (migrate, cleanup, ...)

    @property
    def discovers(self) -> bool:
        return bool(self.discover or self.discover_query)

    @property
    def server(self) -> str:
        """host:port as written (a service's name when it comes from the service file)."""
        host = self.params.get("host") or self.params.get("hostaddr") or ""
        if not host and self.params.get("service"):
            return f"service {self.params['service']}"
        return f"{host or 'localhost'}:{self.params.get('port') or '5432'}"

    @property
    def database(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or ""

    def secret_params(self, environment: Any) -> dict[str, str]:
        """The libpq keywords its secret references give (password, passfile). A reference that
        cannot be followed is a ConfigError naming the target and the reference, never a value."""
        if self.password_env:
            value = environment.named(self.password_env)
            if not value:
                raise ConfigError(f"target {self.name}: password_env names {self.password_env}, which is not set — "
                                  "set it (environment or .env) or change the targets file")
            return {"password": value}
        if self.password_file:
            path = Path(self.password_file).expanduser()
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable text"
                raise ConfigError(f"target {self.name}: cannot read its password_file {shown(str(path))}: "
                                  f"{reason}") from None
            if not lines or not lines[0].strip():
                raise ConfigError(f"target {self.name}: its password_file {shown(str(path))} is empty — "
                                  "write the password on its first line")
            return {"password": lines[0].rstrip("\r\n")}
        if self.passfile:
            return {"passfile": str(Path(self.passfile).expanduser())}
        return {}


@dataclass
class TargetsFile:
    path: Path
    targets: dict[str, Target]
    groups: dict[str, tuple[str, ...]]


# ---------------------------------------------------------------------------------------------
# finding and reading the file


def locate(environment: Any, cwd: Path | None = None) -> Path | None:
    """MINNOCTL_TARGETS, else the nearest minnoctl.toml from the working directory up, else the
    user config directory's; None when there is none."""
    import platformdirs

    found = environment.get("MINNOCTL_TARGETS")
    if found:
        path = Path(found).expanduser()
        if not path.is_file():
            raise ConfigError(f"MINNOCTL_TARGETS names {shown(str(path))}, which is not a file — fix the path "
                              "or unset it")
        return path
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / FILE_NAME).is_file():
            return folder / FILE_NAME
    user = Path(platformdirs.user_config_dir("minnoctl", appauthor=False)) / FILE_NAME
    return user if user.is_file() else None


def load(environment: Any, cwd: Path | None = None) -> TargetsFile:
    """The targets file, checked whole: one ConfigError naming the file and what is wrong."""
    path = locate(environment, cwd)
    if path is None:
        raise ConfigError(f"no targets file: write {FILE_NAME} in the project (README: Targets and fleets) "
                          "or name one with MINNOCTL_TARGETS")
    return parse(path)


def parse(path: Path) -> TargetsFile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown(str(path))} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown(str(path))} is not UTF-8 text") from None
    where = str(path)
    extra = set(data) - {"targets", "groups"}
    if extra:
        raise ConfigError(f"{where}: unknown table {shown(sorted(extra)[0])} — a targets file has [targets.NAME] "
                          "and [groups]")
    raw_targets = data.get("targets", {})
    if not isinstance(raw_targets, dict) or not raw_targets:
        raise ConfigError(f"{where}: no targets — add one, e.g. [targets.main] with url = \"postgresql://…\"")
    targets = {name: _target(where, name, spec) for name, spec in raw_targets.items()}
    groups: dict[str, tuple[str, ...]] = {}
    raw_groups = data.get("groups", {})
    if not isinstance(raw_groups, dict):
        raise ConfigError(f"{where}: [groups] must be a table of NAME = [\"target\", \"tag:TAG\", …]")
    tags = {t for target in targets.values() for t in target.tags}
    for name, members in raw_groups.items():
        _check_name(where, "group", name)
        if name in targets:
            raise ConfigError(f"{where}: group {name} has the name of a target — rename one of them")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise ConfigError(f"{where}: group {name} must be a list of target names and tag:TAG entries")
        for member in members:
            tag = member[4:] if member.startswith("tag:") else None
            if tag is not None and tag not in tags:
                raise ConfigError(f"{where}: group {name} names {shown(member)}, but no target has the tag {tag}")
            if tag is None and member not in targets:
                raise ConfigError(f"{where}: group {name} names {shown(member)}, which is not a target — "
                                  f"targets: {', '.join(targets)}")
        groups[name] = tuple(members)
    return TargetsFile(path, targets, groups)


def _check_name(where: str, kind: str, name: str) -> None:
    if not NAME_RE.match(name):
        raise ConfigError(f"{where}: {kind} name {shown(name)} — use letters, digits, '_', '.', '-' (at most 63)")


def _target(where: str, name: str, spec: Any) -> Target:
    from minnoctl.config import parse_url

    _check_name(where, "target", name)
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: targets.{name} must be a table (url = …, tags = […])")
    unknown = sorted(set(spec) - TARGET_KEYS)
    if unknown:
        raise ConfigError(f"{where}: targets.{name} has the unknown key {shown(unknown[0])} — keys: "
                          f"{', '.join(sorted(TARGET_KEYS))}")
    for key, value in spec.items():
        if key != "tags" and not isinstance(value, str):
            raise ConfigError(f"{where}: targets.{name}.{key} must be a string")
    if ("url" in spec) == ("service" in spec):
        raise ConfigError(f"{where}: targets.{name} needs one of url or service")
    references = [k for k in SECRET_REFERENCES if spec.get(k)]
    if len(references) > 1:
        raise ConfigError(f"{where}: targets.{name} gives {' and '.join(references)} — give one way to the password")
    if spec.get("discover") and spec.get("discover_query"):
        raise ConfigError(f"{where}: targets.{name} gives discover and discover_query — give one")
    tags = spec.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and NAME_RE.match(t) for t in tags):
        raise ConfigError(f"{where}: targets.{name}.tags must be a list of names (letters, digits, '_', '.', '-')")
    conninfo = spec["url"] if "url" in spec else f"service={_quoted(spec['service'])}"
    origin = f"{where}: targets.{name}.{'url' if 'url' in spec else 'service'}"
    params = parse_url(conninfo, origin)
    urls = [("url", params)]
    if spec.get("direct_url"):
        urls.append(("direct_url", parse_url(spec["direct_url"], f"{where}: targets.{name}.direct_url")))
    for key, parsed in urls:
        if parsed.get("password") or parsed.get("sslpassword"):
            raise ConfigError(f"{where}: targets.{name} has a password written in its {key} — a targets file holds "
                              "no secret: use password_env, password_file or passfile")
    return Target(name, conninfo, tuple(tags), spec.get("password_env") or None, spec.get("password_file") or None,
                  spec.get("passfile") or None, spec.get("discover") or None, spec.get("discover_query") or None,
                  spec.get("description", ""), None, params, spec.get("direct_url") or None)


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------------------------------------
# choosing targets


@dataclass(frozen=True)
class Selection:
    """What the command line asked for: --target (repeatable), --group (repeatable), --all-targets."""

    targets: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    all_targets: bool = False

    def __bool__(self) -> bool:
        return bool(self.targets or self.groups or self.all_targets)

    def describe(self) -> str:
        if self.all_targets:
            return "--all-targets"
        return " ".join([f"--target {t}" for t in self.targets] + [f"--group {g}" for g in self.groups])


def choose(file: TargetsFile, selection: Selection) -> list[Target]:
    """The file's targets the selection names, in the file's order, each once (a discovering
    one as it is: `expand` turns it into its databases). An unknown name: UsageError listing them."""
    wanted: list[str] = []
    picked_discovered: list[tuple[str, str]] = []
    if selection.all_targets:
        wanted = list(file.targets)
    for name in selection.targets:
        parent, slash, database = name.partition("/")
        if slash and parent in file.targets and file.targets[parent].discovers and database:
            picked_discovered.append((parent, database))
            continue
        if name not in file.targets:
            hint = f" (a group: --group {name})" if name in file.groups else ""
            raise UsageError(f"no target {shown(name)} in {file.path}{hint} — targets: {', '.join(file.targets)}")
        wanted.append(name)
    for group in selection.groups:
        tag = group[4:] if group.startswith("tag:") else None
        if tag is None and group not in file.groups:
            tags = sorted({t for target in file.targets.values() for t in target.tags})
            raise UsageError(f"no group {shown(group)} in {file.path} — groups: {', '.join(file.groups) or 'none'}"
                             + (f"; tags (tag:NAME): {', '.join(tags)}" if tags else ""))
        for member in (f"tag:{tag}",) if tag is not None else file.groups[group]:
            if member.startswith("tag:"):
                found = [n for n, t in file.targets.items() if member[4:] in t.tags]
                if not found:
                    raise UsageError(f"no target has the tag {shown(member[4:])} in {file.path}")
                wanted += found
            else:
                wanted.append(member)
    order = {name: i for i, name in enumerate(file.targets)}
    chosen = [file.targets[n] for n in sorted(set(wanted), key=order.__getitem__)]
    for parent, database in picked_discovered:
        chosen.append(discovered(file.targets[parent], database))
    return chosen


def discovered(parent: Target, database: str) -> Target:
    """One database found by `parent`'s discovery: the parent's connection with that dbname."""
    from psycopg.conninfo import make_conninfo

    params = {**parent.params, "dbname": database}
    direct = make_conninfo(parent.direct_url, dbname=database) if parent.direct_url else None
    return Target(f"{parent.name}/{database}", make_conninfo(parent.conninfo, dbname=database), parent.tags,
                  parent.password_env, parent.password_file, parent.passfile, description=parent.description,
                  parent=parent.name, params=params, direct_url=direct)


def expand(chosen: Iterable[Target], find: Any) -> list[Target]:
    """Each discovering target replaced by the databases `find(target)` returns (a list of names),
    in name order; a discovered database also named on its own is listed once."""
    result: list[Target] = []
    seen: set[str] = set()
    for target in chosen:
        found = [discovered(target, db) for db in sorted(find(target))] if target.discovers else [target]
        for one in found:
            if one.name not in seen:
                seen.add(one.name)
                result.append(one)
    return result


def discovery_sql(target: Target) -> tuple[str, tuple[Any, ...]]:
    if target.discover_query:
        return target.discover_query, ()
    return ("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate AND datname LIKE %s "
            "ORDER BY datname", (target.discover,))


def discover(ctx: Any) -> list[str]:
    """The databases a discovering target finds (`ctx`: its Context, context.on_target): its query,
    read-only, under a statement timeout; a failing query is one line naming the target."""
    import psycopg

    from minnoctl.connection import first_line
    from minnoctl.errors import MinnoctlError

    target = ctx.target
    sql, args = discovery_sql(target)
    with ctx.session("discover", autocommit=False) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(f"SET LOCAL statement_timeout = '{DISCOVER_TIMEOUT}'")
        try:  # the query as written, no parameters (a % in it is the query's own)
            rows = conn.execute(sql, args or None).fetchall()
        except psycopg.Error as exc:
            raise MinnoctlError(f"target {target.name}: its discovery failed: {first_line(str(exc))} — fix "
                                "discover / discover_query in the targets file") from None
        finally:
            conn.rollback()
    names = []
    for row in rows:
        if not row or not isinstance(row[0], str) or not row[0]:
            raise UsageError(f"target {target.name}: its discovery must return database names (one text column)")
        names.append(row[0])
    return names
