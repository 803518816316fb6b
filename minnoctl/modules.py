"""The module registry, read from the module folders: each module is one folder of the migration set.

`migrations/<module>/` holds everything a module is: its yoyo migrations (NNNN_slug.sql), its
registry entry `module.toml` (schema, dependencies, extensions, encrypted columns, retention tasks,
health checks), the SQL of its retention tasks (`retention/<task>.sql`) and its development data
(`seed/default.json`, `seed/<scenario>.json`). yoyo reads only the .sql / .py files directly in
the folder, so the rest sits beside the migrations without stock yoyo seeing it. The format is in
migrations/README.md.

The folders are read from the migration root in use (resources.migrations_root(): the variable
MINNOCTL_MIGRATIONS_DIR, else the checkout the working directory is in, else the installed
package), so the registry and the migrations always come from the same set. They are read the
first time a command needs the registry (`MODULES`, `BY_NAME` and `TASKS` are looked up lazily,
so `minnoctl --help` parses no TOML), once per process and root; a bad module.toml is one line
naming the file and the field (ConfigError).

Adding a module is adding its folder. ORDER below places the known modules (the order migrations
are applied and modules are shown in); a folder it does not name still loads, after them, in
dependency order and then by name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from minnoctl.errors import ConfigError, UsageError
from minnoctl.render_text import shown

# The place of each known module: a module comes after every module it depends on whatever this says.
ORDER = ("minno", "chatbot", "assistant", "supervisor", "knowledge", "slackbot")

# The schema where minnoctl keeps its own records (applied migrations, drift baselines, app roles,
# settings): never a module's.
BOOKKEEPING = "minnoctl"

ACTIONS = ("archive", "delete", "deactivate", "mark-expired", "release")
ENTRY = "module.toml"


@dataclass(frozen=True)
class EncryptedColumn:
    """A column holding minnoctl.crypto fields; `pk` names the row for the field's associated
    data; `key_ref` is a column that must name the row's data key (supervisor.secrets)."""

    table: str
    column: str
    pk: str
    key_ref: str | None = None


@dataclass(frozen=True)
class RetentionTask:
    """A retention rule of a module, applied by `minnoctl cleanup` (minnoctl/cleanup.py runs it).
    `default_days` is the age at which a row is due; None means the row is due when it expires, and
    an age given with --older-than is then a grace period after expiry.

    How it finds its rows: `table` (schema.table), its primary key `key`, the `time_column` that
    batches walk in order, and `due`, a predicate on alias t where %(cutoff)s is the cutoff time.
    `sql` (retention/<name>.sql) is the statement applied to one locked batch; `citus_sql`
    (retention/<name>.citus.sql, optional) the statements applied instead on a Citus cluster, in
    order, to the batch's rows of one shard (migrations/README.md, "Distribution")."""

    name: str
    action: str  # archive | delete | deactivate | mark-expired | release
    description: str
    default_days: float | None = None
    table: str = ""
    key: str = ""
    time_column: str = ""
    due: str = ""
    sql: str = ""
    citus_sql: str = ""
    # a cheaper predicate to choose batches by, when `sql` re-checks `due` itself
    pick: str | None = None
    # dry run: rows of other tables that go with the due rows ({due} is the task's predicate on t)
    extra_count: str | None = None
    # dry run: (an earlier task, predicate on t) — due rows that earlier task takes away first, so a
    # dry run does not count them twice; {due} is that task's predicate on alias t2
    taken_by: tuple[str, str] | None = None
    requires: tuple[str, ...] = ()  # other tables the statement needs (absent: migrations pending)


@dataclass(frozen=True)
class Module:
    name: str
    schema: str
    description: str
    source: str  # the document in ../shared/spec it comes from
    extensions: tuple[str, ...] = ()  # the migrations need them: no module without them
    # the module's applications use them in their own SQL (spec 003: uuid_generate_v4(), pgcrypto);
    # its migrations do not: db init creates them where the server has them, else names them
    app_extensions: tuple[str, ...] = ()
    depends: tuple[str, ...] = ()
    encrypted: tuple[EncryptedColumn, ...] = ()
    seed_keeps: tuple[str, ...] = ()  # tables `minnoctl seed` never empties (the keyring)
    retention: tuple[RetentionTask, ...] = ()
    folder: Any = field(default=None, compare=False, repr=False)  # the module folder (a Traversable)

    @property
    def migrations_folder(self) -> str:
        return self.name

    @property
    def seed_file(self) -> str:
        """The module's file in a MINNOCTL_SEEDS_DIR folder (format: migrations/README.md)."""
        return f"{self.name}.json"


# ---------------------------------------------------------------------------------------------
# Reading the folders


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a module, schema, table or column name
_TASK = re.compile(r"^[a-z][a-z0-9-]*$")
_QUALIFIED = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


class _Entry:
    """One table of a module.toml, read field by field: each mistake names the file and the field."""

    def __init__(self, where: str, doc: dict[str, Any], prefix: str = ""):
        self.where, self.doc, self.prefix = where, doc, prefix

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {self.prefix}{key} {problem}")

    @overload
    def text(self, key: str, *, required: Literal[True] = ..., pattern: re.Pattern | None = None,
             default: str | None = None) -> str: ...
    @overload
    def text(self, key: str, *, required: bool, pattern: re.Pattern | None = None,
             default: str | None = None) -> str | None: ...

    def text(self, key: str, *, required: bool = True, pattern: re.Pattern | None = None,
             default: str | None = None) -> str | None:
        """The string `key`; a required one is never None (missing raises)."""
        value = self.doc.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is missing")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        if pattern is not None and not pattern.match(value):
            raise self.fail(key, f"{shown(value)} is not a valid name (lowercase letters, digits, _)")
        return value

    def names(self, key: str, pattern: re.Pattern = _NAME) -> tuple[str, ...]:
        value = self.doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of names")
        for v in value:
            if pattern is not None and not pattern.match(v):
                raise self.fail(key, f"holds {shown(v)}, not a valid name")
        return tuple(value)

    def tables(self, key: str) -> list["_Entry"]:
        value = self.doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, f"must be a list of tables ([[{key}]])")
        return [_Entry(self.where, v, f"{self.prefix}{key}[{i}].") for i, v in enumerate(value)]

    def unknown(self, allowed: set[str]) -> None:
        extra = sorted(set(self.doc) - allowed)
        if extra:
            raise self.fail(extra[0], f"is not a field of this table (the fields are: {', '.join(sorted(allowed))})")


_MODULE_FIELDS = {"schema", "description", "source", "extensions", "app_extensions", "depends", "encrypted",
                  "seed_keeps", "retention"}
_ENCRYPTED_FIELDS = {"table", "column", "pk", "key_ref"}
_TASK_FIELDS = {"name", "action", "description", "default_days", "table", "key", "time_column", "due", "pick",
                "extra_count", "taken_by", "requires"}


def _read_module(name: str, folder: Any, where: str) -> Module:
    import tomllib

    try:
        doc = tomllib.loads((folder / ENTRY).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read: {exc}") from None
    entry = _Entry(where, doc)
    entry.unknown(_MODULE_FIELDS)
    encrypted = []
    for e in entry.tables("encrypted"):
        e.unknown(_ENCRYPTED_FIELDS)
        encrypted.append(EncryptedColumn(e.text("table", pattern=_NAME), e.text("column", pattern=_NAME),
                                         e.text("pk", pattern=_NAME), e.text("key_ref", required=False,
                                                                             pattern=_NAME)))
    retention = tuple(_read_task(t, folder, where) for t in entry.tables("retention"))
    return Module(name, entry.text("schema", pattern=_NAME), entry.text("description"), entry.text("source"),
                  extensions=entry.names("extensions", re.compile(r"^[a-z][a-z0-9_-]*$")),
                  app_extensions=entry.names("app_extensions", re.compile(r"^[a-z][a-z0-9_-]*$")),
                  depends=entry.names("depends"), encrypted=tuple(encrypted),
                  seed_keeps=entry.names("seed_keeps"), retention=retention, folder=folder)


def _read_task(t: _Entry, folder: Any, where: str) -> RetentionTask:
    t.unknown(_TASK_FIELDS)
    name = t.text("name", pattern=_TASK)
    action = t.text("action")
    if action not in ACTIONS:
        raise t.fail("action", f"{shown(action)} is not one of {', '.join(ACTIONS)}")
    days = t.doc.get("default_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float)) or days <= 0):
        raise t.fail("default_days", "must be a number of days above 0 (leave it out: due at expiry)")
    taken = t.doc.get("taken_by")
    if taken is not None:
        inner = _Entry(where, taken, f"{t.prefix}taken_by.") if isinstance(taken, dict) else None
        if inner is None:
            raise t.fail("taken_by", "must be a table {task = ..., rows = ...}")
        inner.unknown({"task", "rows"})
        taken = (inner.text("task", pattern=_TASK), inner.text("rows"))
    sql_file = f"retention/{name}.sql"
    try:
        sql = (folder / "retention" / f"{name}.sql").read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise t.fail("name", f"{shown(name)} has no SQL file {sql_file} beside {ENTRY}") from None
    if not sql.strip():
        raise t.fail("name", f"{shown(name)}: {sql_file} is empty")
    try:
        citus_sql = (folder / "retention" / f"{name}.citus.sql").read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        citus_sql = ""
    table = t.text("table")
    if not _QUALIFIED.match(table):
        raise t.fail("table", f"{shown(table)} is not schema.table")
    requires = t.names("requires", _QUALIFIED)
    return RetentionTask(name, action, t.text("description"), None if days is None else float(days), table=table,
                         key=t.text("key", pattern=_NAME), time_column=t.text("time_column", pattern=_NAME),
                         due=t.text("due"), sql=sql, citus_sql=citus_sql, pick=t.text("pick", required=False),
                         extra_count=t.text("extra_count", required=False), taken_by=taken, requires=requires)


def _ordered(found: dict[str, Module], where: dict[str, str]) -> tuple[Module, ...]:
    """Dependency order; among the modules ready at each step, ORDER's first, then by name."""
    for module in found.values():
        for dep in module.depends:
            if dep not in found:
                raise ConfigError(f"{where[module.name]}: depends names {shown(dep)}, which is no module of this "
                                  f"migration set (the modules are: {', '.join(sorted(found))})")
    rank = {name: i for i, name in enumerate(ORDER)}
    done: list[Module] = []
    left = dict(found)
    while left:
        ready = [m for m in left.values() if all(d not in left for d in m.depends)]
        if not ready:
            cycle = ", ".join(sorted(left))
            raise ConfigError(f"{where[min(left)]}: depends forms a cycle among {cycle}")
        chosen = min(ready, key=lambda m: (rank.get(m.name, len(ORDER)), m.name))
        done.append(chosen)
        del left[chosen.name]
    return tuple(done)


@dataclass(frozen=True)
class Registry:
    """The modules of one migration set, in order, and their retention tasks by name."""

    root: Any  # the migration root (a Path, or the package's Traversable)
    modules: tuple[Module, ...]
    by_name: dict[str, Module]
    tasks: dict[str, tuple[Module, RetentionTask]]


def read(root: Any, label: str | None = None) -> Registry:
    """The registry of the migration set at `root` (a folder per module; see the top)."""
    label = label or str(root)
    found: dict[str, Module] = {}
    where: dict[str, str] = {}
    try:
        folders = sorted((p for p in root.iterdir() if p.is_dir() and (p / ENTRY).is_file()), key=lambda p: p.name)
    except (FileNotFoundError, NotADirectoryError):
        folders = []
    for folder in folders:
        where[folder.name] = f"{label}/{folder.name}/{ENTRY}"
        if not _NAME.match(folder.name):
            raise ConfigError(f"{where[folder.name]}: the folder name {shown(folder.name)} is not a valid module "
                              "name (lowercase letters, digits, _)")
        found[folder.name] = _read_module(folder.name, folder, where[folder.name])
    if not found:
        raise ConfigError(f"{label} holds no module (no <module>/{ENTRY}) — point MINNOCTL_MIGRATIONS_DIR at a "
                          "migration set (one folder per module, as migrations/ in the checkout) or unset it")
    schemas: dict[str, str] = {}
    tasks: dict[str, tuple[Module, RetentionTask]] = {}
    ordered = _ordered(found, where)
    for module in ordered:
        if module.schema == BOOKKEEPING or module.schema in schemas:
            other = schemas.get(module.schema, "minnoctl itself")
            raise ConfigError(f"{where[module.name]}: schema {shown(module.schema)} is already {other}'s")
        schemas[module.schema] = module.name
        for task in module.retention:
            if task.name in tasks:
                raise ConfigError(f"{where[module.name]}: retention task {shown(task.name)} is also module "
                                  f"{tasks[task.name][0].name}'s — task names are unique across modules")
            if task.taken_by and task.taken_by[0] not in tasks:
                raise ConfigError(f"{where[module.name]}: retention.taken_by.task {shown(task.taken_by[0])} is no "
                                  "task that runs before this one")
            tasks[task.name] = (module, task)
    return Registry(root, ordered, {m.name: m for m in ordered}, tasks)


_registries: dict[tuple[str | None, str], Registry] = {}


def registry() -> Registry:
    """The registry of the migration root in use, read once per process and root."""
    from minnoctl import resources
    from minnoctl.config import env_value

    chosen = env_value("MINNOCTL_MIGRATIONS_DIR")
    try:
        cwd = os.getcwd()
    except OSError:  # the current directory was removed
        cwd = ""
    key = (chosen[0] if chosen else None, cwd)
    if key not in _registries:
        root = resources.checked_root()
        _registries[key] = read(resources.migrations() if root is None else root,
                                None if root is not None else "minnoctl/migrations")
    return _registries[key]


def __getattr__(name: str) -> Any:
    """MODULES (in order), BY_NAME and TASKS ({task: (module, task)}) of the registry in use."""
    if name == "MODULES":
        return registry().modules
    if name == "BY_NAME":
        return registry().by_name
    if name == "TASKS":
        return registry().tasks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Choosing modules


def get(name: str) -> Module:
    by_name = registry().by_name
    try:
        return by_name[name]
    except KeyError:
        raise UsageError(f"unknown module {shown(name)} — the modules are: {', '.join(by_name)}") from None


def parse_list(text: str | None) -> list[Module] | None:
    """'chatbot, slackbot' -> modules; None (the option left out) -> None (all). An empty list
    ('' or ' , ') is a usage error, never "all"; unknown names are usage errors."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--modules is empty — name modules ({', '.join(registry().by_name)}), or leave it out "
                         "for all")
    return [get(n) for n in names]


def with_dependencies(chosen: list[Module] | None) -> list[Module]:
    """The chosen modules plus everything they depend on, in registry order (all when None)."""
    reg = registry()
    if chosen is None:
        return list(reg.modules)
    wanted: set[str] = set()

    def add(module: Module) -> None:
        if module.name not in wanted:
            wanted.add(module.name)
            for dep in module.depends:
                add(reg.by_name[dep])

    for module in chosen:
        add(module)
    return [m for m in reg.modules if m.name in wanted]


def dependents(names: set[str]) -> set[str]:
    """Every module that depends, directly or not, on one of `names`."""
    found = set(names)
    changed = True
    while changed:
        changed = False
        for module in registry().modules:
            if module.name not in found and found.intersection(module.depends):
                found.add(module.name)
                changed = True
    return found - set(names)
