"""The migration set and the seeds, read from the installed package, never from the repository.

In the repository they live at the top level (migrations/, seeds/); pyproject.toml maps them into the
wheel as the packages minnoctl.migrations and minnoctl.seeds, and an editable install maps the same
package names back to the top-level folders. Either way importlib.resources finds them.
"""

from __future__ import annotations

import contextlib
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Iterator


def migrations() -> Traversable:
    """The root of the migration set: one folder per module."""
    return files("minnoctl.migrations")


def seeds() -> Traversable:
    """The folder of development data files."""
    return files("minnoctl.seeds")


@contextlib.contextmanager
def migrations_path(module: str) -> Iterator[Path]:
    """A real directory holding `module`'s migrations (yoyo reads directories, not Traversables)."""
    with as_file(migrations() / module) as path:
        yield Path(path)
