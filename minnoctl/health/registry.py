"""The health checks, registered by the `check` decorator where they are written.

A check is a function `f(ctx: Context) -> Check` in a small file: the core ones in
minnoctl/health/checks/ (every module of that package is imported), a module's own in its folder,
migrations/<module>/health/*.py (stock yoyo reads only the files directly inside a module folder,
so the subfolder is never taken for a migration). Its registration carries everything said about
it elsewhere: the name, the modules whose installation it needs (`owner`; a check in a module's
folder belongs to that module unless it says otherwise), its thresholds, the line `--list` shows,
and the README's row (`markdown_table`, kept current by tests/test_s18_health_docs.py).

On a Citus cluster a check reads the node it is connected to (the coordinator); one whose data is
that node's alone says what it misses in `coordinator_only`, which the runner appends to its value
there ("; coordinator only: ...") and the README's row names, so an OK of one node never reads as the
cluster's. The checks of the cluster itself (citus.py) fan out to the workers.

Module checks are read from the migration set in use — migrate.migrations_root(): MINNOCTL_MIGRATIONS_DIR,
the checkout the working directory is in, else the installed package — once per process and set,
so a copied set with a check of its own (as a test makes) has it, and the package's is unchanged.
They are Python run with the user's rights, as trusted as the SQL beside them that `migrate` runs.

Order: every check has an `order` number and reports list checks by it (then by name). The built-in
checks are numbered in tens in the order the report has always had (connection 10 ... table_stats
300); a new check takes a free number between the two it belongs between, and one that gives none
comes after all of them. One number beside the check, rather than a list elsewhere, keeps adding a
check to one file, a module's checks included.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from collections.abc import Callable, Sequence

from minnoctl.errors import MinnoctlError, UsageError
from minnoctl.health.threshold import Threshold, show
from minnoctl.render_text import shown

if TYPE_CHECKING:
    from minnoctl.health.report import Check
    from minnoctl.health.runner import Context

LAST = 1000  # the order of a check that gives none: after the built-in ones
README_START = "<!-- health checks: generated from minnoctl/health (python -m minnoctl.health --write-readme) -->"
README_END = "<!-- end of the generated health checks -->"


@dataclass(frozen=True)
class CheckSpec:
    name: str
    run: Callable[["Context"], "Check"]
    description: str  # the line `minnoctl health --list` shows
    thresholds: tuple[Threshold, ...] = ()
    owner: tuple[str, ...] = ()  # the modules it needs, any one installed (none: it always runs)
    doc: str = ""  # the README's "looks at" (Markdown)
    levels: str = ""  # the README's "default thresholds", in words
    order: int = LAST
    report: bool = True  # part of `minnoctl health` (else only of the probes it names)
    probes: tuple[str, ...] = ()  # the probes that run it too: live, ready
    source: str = ""  # the file that registered it
    scope: str = "database"  # "server": it looks at the whole server (a fleet run does it once per server)
    coordinator_only: str = ""  # on Citus: what it misses, reading one node (said in its value there)

    @property
    def threshold_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.thresholds)


_core: dict[str, CheckSpec] = {}
# a check function as written: f(ctx) -> Check, maybe with optional keyword arguments of its own
# (jobs' backup(ctx, verified=...)), which the decorator keeps in its type
CheckFn = TypeVar("CheckFn", bound=Callable[..., "Check"])
_sets: dict[Path | None, dict[str, CheckSpec]] = {}  # a migration set's module checks, by its root
_loading: list[tuple[dict[str, CheckSpec], str]] = []  # the module folder being read, while it is
_core_loaded = False
_load_lock = threading.RLock()


def check(name: str, *, description: str, doc: str | None = None, levels: str = "",
          thresholds: tuple[Threshold, ...] = (), owner: tuple[str, ...] | None = None, order: int = LAST,
          report: bool = True, probes: tuple[str, ...] = (),
          scope: str = "database", coordinator_only: str = "") -> Callable[[CheckFn], CheckFn]:
    """Register `f(ctx) -> Check` as the health check `name` (see the module docstring)."""
    def register(fn: CheckFn) -> CheckFn:
        target, module = _loading[-1] if _loading else (_core, None)
        spec = CheckSpec(name, fn, description, tuple(thresholds),
                         tuple(owner) if owner is not None else (module,) if module else (), doc or description,
                         levels, order, report, tuple(probes), fn.__code__.co_filename, scope, coordinator_only)
        _add(target, spec)
        return fn

    return register


SCOPES = ("database", "server")


def _add(target: dict[str, CheckSpec], spec: CheckSpec) -> None:
    if spec.scope not in SCOPES:
        raise MinnoctlError(f"health check {spec.name}: scope {spec.scope!r} is not one of {', '.join(SCOPES)}")
    taken = {**_core, **target}
    if spec.name in taken:
        raise MinnoctlError(f"two health checks are named {spec.name}: {taken[spec.name].source} and {spec.source}")
    declared = {t.name: s for s in taken.values() for t in s.thresholds}
    for t in spec.thresholds:
        if t.name in declared:
            raise MinnoctlError(f"health threshold {t.name} is declared twice: by {declared[t.name].name} "
                                f"({declared[t.name].source}) and by {spec.name} ({spec.source})")
    target[spec.name] = spec


def _load_core() -> None:
    global _core_loaded
    if _core_loaded:
        return
    from minnoctl.health import checks as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):  # a helper of the checks, not one
            continue
        importlib.import_module(f"{package.__name__}.{info.name}")
    _core_loaded = True


def _module_checks() -> dict[str, CheckSpec]:
    """The checks of the module folders of the migration set in use, read once per set."""
    from minnoctl import migrate, modules, resources

    root, _ = migrate.migrations_root()
    if root in _sets:
        return _sets[root]
    found: dict[str, CheckSpec] = {}
    for module in modules.MODULES:
        if root is not None:
            _load_folder(found, module.name, root / module.migrations_folder / "health")
        else:
            with resources.migrations_path(module.migrations_folder) as folder:
                _load_folder(found, module.name, folder / "health")
    _sets[root] = found
    return found


def _load_folder(target: dict[str, CheckSpec], module: str, folder: Path) -> None:
    """Run each migrations/<module>/health/*.py, its registrations going to `target` and owned by
    `module` by default. The module name is minnoctl.health.module_checks.<module>.<file> (for
    tracebacks; another set's file of the same name takes the name over, the registry keeps both)."""
    import sys

    for path in sorted(folder.glob("*.py")) if folder.is_dir() else ():
        if path.name.startswith("_"):
            continue
        name = f"minnoctl.health.module_checks.{module}.{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None  # a .py file always has a spec and a loader
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[name] = loaded
        _loading.append((target, module))
        try:
            spec.loader.exec_module(loaded)
        finally:
            _loading.pop()


def registered() -> list[CheckSpec]:
    """Every check, the probes' own included, in report order. Loading is one thread at a time
    (a fleet run's targets ask at once; the decorator's `_loading` is this module's state)."""
    with _load_lock:
        _load_core()
        found = _module_checks()
    return sorted([*_core.values(), *found.values()], key=lambda s: (s.order, s.name))


def checks() -> list[CheckSpec]:
    """The checks of `minnoctl health`, in report order."""
    return [s for s in registered() if s.report]


def probe(name: str) -> list[CheckSpec]:
    """The checks a probe (live, ready) runs, in report order."""
    return [s for s in registered() if name in s.probes]


def by_name() -> dict[str, CheckSpec]:
    return {s.name: s for s in checks()}


def thresholds() -> dict[str, Threshold]:
    """Every threshold, by name, in the order of the checks that declare them."""
    return {t.name: t for s in registered() for t in s.thresholds}


def core_thresholds() -> dict[str, Threshold]:
    """The thresholds of the core checks alone (no migration set read): for `config show` when the
    configured set cannot be read, which it reports as a setting of its own."""
    _load_core()
    return {t.name: t for s in sorted(_core.values(), key=lambda s: (s.order, s.name)) for t in s.thresholds}


def select(only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[str]:
    """The checks to run, in report order; names may use - or _ and come comma-separated."""
    known = by_name()

    def names(items: Sequence[str], option: str) -> list[str]:
        out = []
        for item in items:
            for part in item.split(","):
                part = part.strip().replace("-", "_")
                if not part:
                    continue
                if part not in known:
                    raise UsageError(f"{option}: unknown check {shown(part)} — the checks are: {', '.join(known)}")
                out.append(part)
        return out

    chosen, left_out = names(only, "--only"), names(skip, "--skip")
    return [name for name in known if (not chosen or name in chosen) and name not in left_out]


LIST_COLUMNS = ["check", "module", "description", "thresholds"]


def list_checks(limits: dict[str, float | None]) -> list[dict[str, Any]]:
    """`minnoctl health --list`: each check, its module, what it looks at, and its thresholds with
    their values now and variables."""
    return [{"check": s.name, "module": ", ".join(s.owner) or "-", "description": s.description,
             "thresholds": "; ".join(f"{t.name}={show(limits[t.name], t.unit)} ({t.env})" for t in s.thresholds)}
            for s in checks()]


def markdown_table() -> str:
    """The README's table of checks (between README_START and README_END), from the registrations."""
    from minnoctl.readme import markdown_rows

    return markdown_rows(("check", "looks at", "default thresholds"),
                         [(f"`{s.name}`", s.doc + (f"; on Citus, the coordinator's only ({s.coordinator_only})"
                                                  if s.coordinator_only else ""), s.levels) for s in checks()])


def readme_with_table(readme: str) -> str:
    """`readme` with the text between the markers replaced by markdown_table() (minnoctl.readme)."""
    from minnoctl.readme import replace_between

    return replace_between(readme, README_START, README_END, markdown_table(), "health table")
