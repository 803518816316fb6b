"""The migration set (one folder per module, with its registry entry, retention SQL and seed data),
and where it is read from.

In the repository it lives at the top level (migrations/); pyproject.toml maps it into the wheel as
the package minnoctl.migrations, and an editable install maps the same package name back to the
top-level folder. Either way importlib.resources finds it. Which set a command reads — this one,
a checkout's, or MINNOCTL_MIGRATIONS_DIR — is migrations_root(): migrations and the module
registry (minnoctl/modules.py) are always read from the same root.
"""

from __future__ import annotations

import contextlib
import logging
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path
from collections.abc import Iterator

log = logging.getLogger("minnoctl")


def migrations() -> Traversable:
    """The root of the installed package's migration set: one folder per module."""
    return files("minnoctl.migrations")


@contextlib.contextmanager
def migrations_path(module: str) -> Iterator[Path]:
    """A real directory holding `module`'s migrations (yoyo reads directories, not Traversables)."""
    with as_file(migrations() / module) as path:
        yield Path(path)


def _project_checkout(start: Path) -> Path | None:
    """The migration set of the minnoctl checkout holding `start` (it or a parent folder with a
    pyproject.toml naming the project minnoctl and a migrations/ folder), or None."""
    import tomllib

    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "migrations").is_dir():
            try:
                text = (folder / "pyproject.toml").read_text(encoding="utf-8")
                name = tomllib.loads(text).get("project", {}).get("name")
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                continue
            if name == "minnoctl":
                return folder / "migrations"
    return None


_told: set[Path] = set()


def migrations_root() -> tuple[Path | None, str]:
    """Where the migration set is, for migrate, db init and migrate new alike: MINNOCTL_MIGRATIONS_DIR
    (the environment, else .env); else the checkout the current directory is in; else the installed
    package's set (None). The second value says which, for messages."""
    from minnoctl.config import env_value

    chosen = env_value("MINNOCTL_MIGRATIONS_DIR")
    if chosen:
        return Path(chosen[0]), "MINNOCTL_MIGRATIONS_DIR"
    try:
        checkout = _project_checkout(Path.cwd())
    except OSError:  # the current directory was removed
        checkout = None
    if checkout is not None:
        with as_file(migrations()) as packaged:
            if Path(packaged).resolve() != checkout.resolve() and checkout not in _told:
                _told.add(checkout)  # an editable install reads it anyway; else say so once
                log.info("using the migration set of the checkout %s (not the installed package's)", checkout)
        return checkout, "checkout"
    return None, "package"


def checked_root() -> Path | None:
    """migrations_root(), refusing a MINNOCTL_MIGRATIONS_DIR that is not a directory: a typo would
    read as an empty set (ConfigError, one line)."""
    root, found = migrations_root()
    if found == "MINNOCTL_MIGRATIONS_DIR" and root is not None and not root.is_dir():
        from minnoctl.config import env_value
        from minnoctl.errors import ConfigError
        from minnoctl.render_text import shown

        source = (env_value("MINNOCTL_MIGRATIONS_DIR") or ("", "MINNOCTL_MIGRATIONS_DIR"))[1]
        raise ConfigError(f"{source}: {shown(str(root))} is not a directory — point it at a migration set "
                          "(one folder per module, as migrations/ in the checkout) or unset it")
    return root
