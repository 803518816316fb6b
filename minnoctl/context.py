"""One context per command invocation: settings with their sources, the output, and sessions.

Every command builds a `Context` once (`minnoctl.cli.context()`), passes it to the logic it calls
and hands what the logic returns, as a render.Result, to `ctx.show(...)`. The context owns

- `environment`: the process environment and the .env file, read once (config.Environment);
- `settings`: the connection settings resolved from it once, with the source of each value;
- `fmt` and the quiet/traceback flags: how results and notes are shown (render.py formats them);
- `session(...)`: a working connection with minnoctl's session settings (application name naming
  the holder, the session's time zone, an advisory lock when asked), closed and its session
  state gone when the block ends — so nothing minnoctl SETs outlives its use of a connection.

alembic's `Config` passed to every `command.*` function is the model. A fleet run (several targets)
is the same command once per target context: `ctx.for_target(url)` makes one that shares the
environment and the output, with its own settings; a target of the targets file (targets.Target)
gives its connection and its secret by reference (minnoctl/fleet.py runs a command over many).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from collections.abc import Iterator

from minnoctl.config import Environment, Settings, load_settings

if TYPE_CHECKING:
    import psycopg

    from minnoctl.targets import Target


@dataclass
class Context:
    """Everything one invocation of a command needs besides its own options."""

    environment: Environment
    database_url: str | None = None  # --database-url (the command's, else the root one)
    fmt: str = "table"
    quiet: bool = False
    traceback: bool = False
    target: "Target | None" = None  # a target of the targets file (--target): its URL and secret
    server_checks: bool = True  # health: run the server-wide checks too (a fleet runs them once per server)
    _settings: Settings | None = field(default=None, repr=False)

    # -- settings -------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The connection settings, resolved once (a bad setting raises ConfigError here)."""
        if self._settings is None:
            if self.target is not None:
                settings = load_settings(self.target.conninfo, env=self.environment,
                                         origin=f"target {self.target.name}")
                secret = self.target.secret_params(self.environment)
                settings.params.update(secret)
                settings.source = f"target {self.target.name}"
                settings.direct = None  # MINNO_DIRECT_URL is the environment's database's, never a target's
                if self.target.direct_url:  # the server itself, for the commands a transaction pool cannot serve
                    direct = load_settings(self.target.direct_url, env=self.environment,
                                           origin=f"target {self.target.name} direct_url")
                    direct.params.update(secret)
                    direct.source = f"target {self.target.name} direct_url"
                    settings.direct = replace(direct, direct=None)
                self._settings = settings
            else:
                self._settings = load_settings(self.database_url, env=self.environment)
        return self._settings

    def value(self, name: str) -> tuple[str, str] | None:
        """(value, source) of one variable from the environment or .env; None when unset or empty."""
        found = self.environment.get(name)
        return (found, self.environment.source(name) or name) if found else None

    def for_target(self, database_url: str | None) -> "Context":
        """The same invocation against another database (same environment and output)."""
        return replace(self, database_url=database_url, target=None, _settings=None)

    def on_target(self, target: "Target", *, server_checks: bool = True) -> "Context":
        """The same invocation against a target of the targets file."""
        return replace(self, database_url=None, target=target, server_checks=server_checks, _settings=None)

    # -- sessions -------------------------------------------------------------------------
    @contextmanager
    def session(self, purpose: str | None = None, *, dbname: str | None = None, autocommit: bool = True,
                lock: str | None = None, lock_timeout: float = 0.0,
                time_zone: str | None = None) -> Iterator["psycopg.Connection"]:
        """A working session: connected, named after `purpose` (`minnoctl <purpose> pid=… host=…`
        in pg_stat_activity, and as a lock's holder), in `time_zone` when given, holding minnoctl's
        advisory lock `lock` (locks.KEYS) for the whole block when given; closed at the end, which
        ends every session setting and lock with it (connection.session)."""
        from minnoctl import connection

        with connection.session(self.settings, purpose, dbname=dbname, autocommit=autocommit,
                                lock=lock, lock_timeout=lock_timeout, time_zone=time_zone) as conn:
            yield conn

    # -- output ---------------------------------------------------------------------------
    def show(self, result: Any) -> None:
        """Show a command's render.Result in the invocation's format."""
        from minnoctl import render

        render.show(result, self.fmt)
