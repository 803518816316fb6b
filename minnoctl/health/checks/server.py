"""The server itself: `server_version`, `extensions`, and the readiness probe's `recovery`."""

from __future__ import annotations

from minnoctl.health import SUPPORTED_MAJORS, Check, Context, Status, check


@check("server_version", scope="server", order=20, probes=("live",),
       description=f"PostgreSQL {SUPPORTED_MAJORS[0]} to {SUPPORTED_MAJORS[1]}",
       doc=f"PostgreSQL {SUPPORTED_MAJORS[0]}–{SUPPORTED_MAJORS[1]} (what minnoctl is tested on); standby or primary",
       coordinator_only="the workers' versions are not read")
def server_version(ctx: Context) -> Check:
    if ctx.probe == "live":  # the liveness probe only names the version
        from minnoctl.connection import server_version as version_of

        return Check("server_version", Status.OK, value=f"PostgreSQL {version_of(ctx.conn)}")
    num, version, recovery = ctx.one("SELECT current_setting('server_version_num')::int, "
                                     "current_setting('server_version'), pg_is_in_recovery()")
    major = num // 10000
    low, high = SUPPORTED_MAJORS
    text = f"PostgreSQL {version.split()[0]}" + (" (standby, in recovery)" if recovery else "")
    if major < low:
        return Check("server_version", Status.WARNING, text, f"{low}-{high}",
                     f"PostgreSQL {major} is older than minnoctl supports; upgrade the server")
    if major > high:
        return Check("server_version", Status.WARNING, text, f"{low}-{high}",
                     f"PostgreSQL {major} is newer than minnoctl was tested on; check the release notes")
    return Check("server_version", Status.OK, text, f"{low}-{high}")


@check("recovery", order=15, report=False, probes=("ready",),
       description="not in recovery: a primary, which accepts writes (--ready only)")
def recovery(ctx: Context) -> Check:
    standby = ctx.one("SELECT pg_is_in_recovery()")[0]
    return Check("recovery", Status.CRITICAL if standby else Status.OK,
                 "in recovery: a standby, read only (not ready for writes)" if standby else "primary, accepts writes",
                 "not in recovery", "point the application at the primary" if standby else "")


@check("extensions", order=30, description="the extensions the installed modules need (pgvector)",
       doc="the extensions each installed module needs (pgvector for knowledge)", levels="missing: critical",
       coordinator_only="the workers' extensions are not read")
def extensions(ctx: Context) -> Check:
    from minnoctl import modules

    installed_ext = dict(ctx.all("SELECT extname, extversion FROM pg_extension"))
    needed = {(m.name, e) for m in modules.MODULES if m.name in ctx.installed for e in m.extensions}
    missing = sorted(f"{e} (for {m})" for m, e in needed if e not in installed_ext)
    # the extensions a module's applications use (Module.app_extensions): missing but on the server
    # is a WARNING (`minnoctl migrate` creates them); absent from the server is reported, not judged
    app = {(m.name, e) for m in modules.MODULES if m.name in ctx.installed for e in m.app_extensions}
    needed |= {(m, e) for m, e in app if e in installed_ext}
    lacking = sorted({e for _, e in app if e not in installed_ext})
    on_server = {r[0] for r in ctx.all("SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
                                       (lacking,))} if lacking else set()
    have = sorted({f"{e} {installed_ext[e]}" for _, e in needed if e in installed_ext})
    notes = [f"{e} not available on this server" for e in lacking if e not in on_server]
    creatable = [e for e in lacking if e in on_server]
    if missing:
        return Check("extensions", Status.CRITICAL, "missing: " + ", ".join(missing), "every module's extensions",
                     "install the extension on the server, then CREATE EXTENSION it (or `minnoctl migrate`)")
    if creatable:
        return Check("extensions", Status.WARNING, "not created: " + ", ".join(creatable), "every module's extensions",
                     "run `minnoctl migrate`, which creates them (or CREATE EXTENSION as an admin)")
    value = ", ".join(have + notes) if have or notes else "none needed"
    return Check("extensions", Status.OK, value, "every module's extensions")
