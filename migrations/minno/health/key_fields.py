"""`key_fields`: encrypted fields still on a retired key, and plaintext in encrypted columns (a module
check of minno, whose keyring it reads)."""

from __future__ import annotations

from minnoctl.health import Check, Context, Status, check


@check("key_fields", order=280,
       description="encrypted fields still on a key that is no longer active, and plaintext in encrypted columns",
       doc="encrypted fields still on a key that is no longer active (an unfinished rotation), and plaintext in "
           "encrypted columns (stored before minno/0007, a count per column)", levels="warning")
def key_fields(ctx: Context) -> Check:
    from minnoctl import tokens

    text = "every field on the active key, every value an encrypted field"
    # plaintext an application stored before minno/0007 refused it: a WARNING, not CRITICAL — the
    # rows still work for the application that wrote them and nothing is lost, but they are not
    # encrypted at rest and `token verify` fails on them until the application stores them again
    counts = tokens.field_counts(ctx.conn)
    plain = tokens.not_fields(counts)
    keys = ctx.all("SELECT key_number, status FROM minno.encryption_keys ORDER BY key_number")
    old = {n for n, s in keys if s == "decrypt_only"}
    on_old = sum(c["fields"] for c in counts if c["key"] in old)
    if plain:
        listed = ", ".join(f"{column} {n:,}" for column, n in plain.items())
        also = f"; {on_old:,} fields still on key {', '.join(map(str, sorted(old)))} (decrypt only)" if on_old else ""
        return Check("key_fields", Status.WARNING, f"plaintext, not encrypted fields: {listed} "
                     f"({sum(plain.values()):,} in all){also}", text,
                     f"{tokens.NOT_A_FIELD_HINT} (`minnoctl token verify` lists them)",
                     perfdata={"fields_not_encrypted": (sum(plain.values()), "", None, None),
                               "fields_on_old_keys": (on_old, "", None, None)})
    if not keys:
        return Check("key_fields", Status.OK, "no keyring yet (made by the first encrypted write)", text)
    active = [n for n, s in keys if s == "active"]
    if not old:
        return Check("key_fields", Status.OK, f"key {active[0] if active else '?'} active; no older key in use", text)
    perf = {"fields_on_old_keys": (on_old, "", None, None)}
    if on_old:
        return Check("key_fields", Status.WARNING, f"{on_old:,} fields still on key "
                     f"{', '.join(map(str, sorted(old)))} (decrypt only)", text,
                     "a rotation did not finish: run `minnoctl token rotate` (it resumes)", perfdata=perf)
    return Check("key_fields", Status.OK, f"key {', '.join(map(str, sorted(old)))} (decrypt only) holds no field",
                 text, "`minnoctl token rotate` retires it", perfdata=perf)
