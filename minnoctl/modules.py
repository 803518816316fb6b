"""The module registry: for each module its schema, migrations folder, extensions and dependencies.

Commands iterate this registry; adding a module is adding one entry here and one folder under
migrations/. Each entry names its seed file and declares its retention tasks, encrypted columns and
health checks to the same entries.
"""

from __future__ import annotations

from dataclasses import dataclass

from minnoctl.errors import UsageError
from minnoctl.render_text import shown


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
    """A retention rule of a module, applied by `minnoctl cleanup` (its SQL is in minnoctl/cleanup.py).
    `default_days` is the age at which a row is due; None means the row is due when it expires, and
    an age given with --older-than is then a grace period after expiry."""

    name: str
    action: str  # archive | delete | deactivate | mark-expired | release
    description: str
    default_days: float | None = None


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
    health: tuple[str, ...] = ()  # checks of minnoctl/health.py that need this module (any one of their owners)

    @property
    def migrations_folder(self) -> str:
        return self.name

    @property
    def seed_file(self) -> str:
        """The module's development data in seeds/ (format: seeds/README.md)."""
        return f"{self.name}.json"


# The schema where minnoctl keeps its own records (applied migrations, drift baselines, app roles,
# settings): never a module's.
BOOKKEEPING = "minnoctl"

# In dependency order: a module comes after every module it depends on.
MODULES: tuple[Module, ...] = (
    Module("minno", "minno", "core: Slack workspaces, Notion, encrypted OAuth tokens, sessions, messages, keyring",
           "000 (and 003's encryption_keys)",
           encrypted=(EncryptedColumn("oauth_tokens", "access_token_encrypted", "id"),
                      EncryptedColumn("oauth_tokens", "refresh_token_encrypted", "id")),
           health=("tokens", "key_fields"),
           seed_keeps=("encryption_keys", "key_audit_log")),
    Module("chatbot", "chatbot", "Micro Chatbot Service: conversations and messages", "001", depends=("minno",),
           retention=(
               RetentionTask("chatbot-conversations", "archive",
                             "conversations inactive for DAYS (no update and no message since), with all their "
                             "messages, moved to conversations_archive / messages_archive", 90),
               RetentionTask("chatbot-system-messages", "delete", "system messages older than DAYS", 30))),
    Module("assistant", "assistant", "AI Assistant Platform: user tokens, sessions, confirmations", "002",
           depends=("minno",),
           encrypted=tuple(EncryptedColumn("user_tokens", f"{provider}_{kind}_token", "user_id")
                           for provider in ("google", "slack") for kind in ("access", "refresh"))
           + (EncryptedColumn("oauth_tokens", "access_token", "session_id"),
              EncryptedColumn("oauth_tokens", "refresh_token", "session_id")),
           health=("tokens",),
           retention=(
               RetentionTask("assistant-sessions", "delete",
                             "sessions past expires_at (with their confirmations and legacy tokens)"),
               RetentionTask("assistant-confirmations", "mark-expired",
                             "pending confirmations past expires_at, marked expired"))),
    Module("supervisor", "supervisor", "supervisor-service: projects, secrets, ports, task timing", "003 (001-004)",
           depends=("minno",), app_extensions=("uuid-ossp", "pgcrypto"),
           encrypted=(EncryptedColumn("secrets", "encrypted_value", "id", key_ref="encryption_key_id"),),
           health=("secrets", "port_ranges"),
           retention=(
               RetentionTask("port-reservations", "delete", "port reservations past expires_at"),
               RetentionTask("port-leases", "release", "port allocations whose lease has expired, released"))),
    Module("knowledge", "knowledge", "learnings index for retrieval (pgvector)", "003 (005)",
           extensions=("vector",), depends=("minno", "supervisor")),
    Module("slackbot", "slackbot", "Slackbot: sessions, query history, cache, audit logs", "004",
           depends=("minno",), health=("table_stats",),
           retention=(
               RetentionTask("slackbot-sessions", "deactivate", "active sessions with no activity for DAYS", 1),
               RetentionTask("slackbot-cache", "delete", "query cache entries past expires_at, or invalidated"),
               RetentionTask("slackbot-audit-logs", "archive", "audit logs older than DAYS, moved to "
                             "audit_logs_archive", 90))),
)

BY_NAME = {m.name: m for m in MODULES}
TASKS = {t.name: (m, t) for m in MODULES for t in m.retention}


def get(name: str) -> Module:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown module {shown(name)} — the modules are: {', '.join(BY_NAME)}") from None


def parse_list(text: str | None) -> list[Module] | None:
    """'chatbot, slackbot' -> modules; None (the option left out) -> None (all). An empty list
    ('' or ' , ') is a usage error, never "all"; unknown names are usage errors."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--modules is empty — name modules ({', '.join(BY_NAME)}), or leave it out for all")
    return [get(n) for n in names]


def with_dependencies(chosen: list[Module] | None) -> list[Module]:
    """The chosen modules plus everything they depend on, in registry order (all when None)."""
    if chosen is None:
        return list(MODULES)
    wanted: set[str] = set()

    def add(module: Module) -> None:
        if module.name not in wanted:
            wanted.add(module.name)
            for dep in module.depends:
                add(BY_NAME[dep])

    for module in chosen:
        add(module)
    return [m for m in MODULES if m.name in wanted]


def dependents(names: set[str]) -> set[str]:
    """Every module that depends, directly or not, on one of `names`."""
    found = set(names)
    changed = True
    while changed:
        changed = False
        for module in MODULES:
            if module.name not in found and found.intersection(module.depends):
                found.add(module.name)
                changed = True
    return found - set(names)
