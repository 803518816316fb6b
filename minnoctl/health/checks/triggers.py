"""`disabled_triggers`: the modules' triggers that someone disabled."""

from __future__ import annotations

from typing import Any

from minnoctl.health import Check, Context, Status, check

KEY_GUARD = "minno.reject_retired_field_keys()"  # migrations/minno/0004_field_key_guard.sql


@check("disabled_triggers", order=160,
       description="disabled triggers of the modules' tables (warning; a key guard: critical)",
       doc="triggers of the installed modules' tables that are disabled (or replica-only)",
       levels="warning; a key guard (`minno.reject_retired_field_keys`): critical")
def disabled_triggers(ctx: Context) -> Check:
    """Triggers of the modules' tables that are disabled (ALTER TABLE ... DISABLE TRIGGER): the
    updated_at, sync and port triggers are WARNING, the key guards (they keep a field from being
    written under a retired key) CRITICAL."""
    from minnoctl import modules

    schemas = [m.schema for m in modules.MODULES if m.name in ctx.installed]
    text = "every trigger of the modules' tables enabled"
    rows = ctx.all(
        "SELECT format('%%I.%%I', n.nspname, c.relname), t.tgname, quote_ident(t.tgname), "
        "  t.tgfoid = coalesce(to_regprocedure(%s), 0), t.tgenabled::text "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT t.tgisinternal AND t.tgenabled IN ('D', 'R') AND n.nspname = ANY(%s) ORDER BY 4 DESC, 1, 2",
        (KEY_GUARD, schemas))
    guards = [r for r in rows if r[3]]
    # every disabled trigger warns; a disabled key guard is critical, so its own metric says so
    perf = {"disabled_triggers": (len(rows), "", 0, None), "disabled_key_guards": (len(guards), "", None, 0)}
    if not rows:
        return Check("disabled_triggers", Status.OK, "none disabled", text, perfdata=perf)
    status = Status.CRITICAL if guards else Status.WARNING

    def what(r: Any) -> str:
        return f"{r[0]}.{r[1]}" + (" (key guard)" if r[3] else "") + (" (replica only)" if r[4] == "R" else "")

    value = f"{len(rows)} disabled: " + ", ".join(what(r) for r in rows)
    hint = ("a disabled key guard lets a field be written under a retired key, lost for good: enable it now "
            "(--hints)" if guards else "its job (updated_at, key sync, port bookkeeping) is not done: enable it "
            "(--hints), or find who disabled it")
    return Check("disabled_triggers", status, value, text, hint, perfdata=perf,
                 sql=[f"ALTER TABLE {r[0]} ENABLE TRIGGER {r[2]};" for r in rows])
