"""`minnoctl token ...`: encrypted tokens and secrets, keys and rotation.

Secrets come from files or standard input, never from argv; no command prints a token's plaintext.
"""

from __future__ import annotations

from typing import Annotated

import typer

from minnoctl.cli.options import MAX_RUNTIME_S, DatabaseUrl, Duration, Format, Number, note as _note
from minnoctl.render_text import shown

token_app = typer.Typer(help="Encrypted OAuth tokens and secrets; key generation and rotation.\n\n"
                        "Example: minnoctl token rotate --dry-run", no_args_is_help=True)


def _context(database_url: str | None, fmt: str = "table"):
    """The command's context."""
    from minnoctl.cli import context

    return context(database_url, fmt)


def _with_key(database_url: str | None, fmt: str = "table"):
    """(context, master key) for a command; the development key only for the embedded database."""
    from minnoctl import crypto

    ctx = _context(database_url, fmt)
    kek = crypto.load_master_key(embedded=ctx.settings.embedded, minno_home=ctx.settings.minno_home)
    return ctx, kek


def _read_secret(path: str, option: str) -> str:
    import sys
    from pathlib import Path

    from minnoctl.errors import UsageError

    if path == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{option}: cannot read {path} ({exc.__class__.__name__})") from None
    text = text.rstrip("\r\n")
    if not text:
        raise UsageError(f"{option}: {'standard input' if path == '-' else path} is empty")
    return text



@token_app.command("keygen")
def keygen() -> None:
    """Print a new master key (base64 of 32 random bytes) and nothing else.

    Example: minnoctl token keygen > master.key && chmod 600 master.key
    """
    from minnoctl import crypto

    typer.echo(crypto.encode_key(crypto.generate_key()))


@token_app.command("put")
def put(
    provider: Annotated[str, typer.Option("--provider", help="google, notion or slack, or one this database already "
                                          "stores (with --user: google or slack); another is refused as a typo "
                                          "unless --allow-unknown-provider.")],
    access_token_file: Annotated[str, typer.Option("--access-token-file", help="File holding the access token, "
                                                   "or - for standard input.")],
    workspace: Annotated[str | None, typer.Option("--workspace", help="The Slack team id (T...): a workspace's "
                                                     "token, in minno.oauth_tokens.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="A user id instead: the user's token in spec 002's "
                                                "assistant.user_tokens (what its getUserTokens() reads).")] = None,
    refresh_token_file: Annotated[str | None, typer.Option("--refresh-token-file", help="File holding the "
                                                              "refresh token, or -.")] = None,
    expires_at: Annotated[str | None, typer.Option("--expires-at", help="ISO 8601 time, e.g. "
                                                      "2026-12-31T00:00:00Z, or never for no expiry.")] = None,
    scopes: Annotated[str | None, typer.Option("--scopes", help="Comma-separated scopes.")] = None,
    allow_unknown_provider: Annotated[bool, typer.Option("--allow-unknown-provider", help="Store a token for a "
                                                         "provider not known yet (a new integration).")] = False,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Store (or replace) a workspace's token for a provider, encrypted.

    With --user instead of --workspace: a user's Google or Slack token in assistant.user_tokens (its
    other provider is kept); --scopes are joined as each provider writes them (Google: spaces).
    Example: minnoctl token put --workspace T0ACME0001 --provider slack --access-token-file - < token.txt
    """
    import datetime as dt

    from minnoctl import render, tokens
    from minnoctl.connection import check_lengths
    from minnoctl.errors import UsageError

    if (workspace is None) == (user is None):
        raise UsageError("give --workspace (a workspace's token) or --user (a user's token in assistant.user_tokens), "
                         "one of them")
    if access_token_file == "-" and refresh_token_file == "-":
        raise UsageError("only one of --access-token-file and --refresh-token-file can read standard input")
    when = None
    if expires_at is not None and expires_at.strip().lower() != "never":  # never: no expiry ('' is refused)
        try:
            when = dt.datetime.fromisoformat(expires_at.strip().replace("Z", "+00:00"))
            if when.tzinfo is not None:
                when = when.astimezone(dt.UTC).replace(tzinfo=None)  # minno stores UTC TIMESTAMP
        except (ValueError, OverflowError):
            raise UsageError(f"--expires-at {shown(expires_at)} is not an ISO 8601 time, e.g. 2026-12-31T00:00:00Z, "
                             "or never") from None
    access = _read_secret(access_token_file, "--access-token-file")
    refresh = _read_secret(refresh_token_file, "--refresh-token-file") if refresh_token_file else None
    ctx, kek = _with_key(database_url, fmt)
    listed = [s.strip() for s in (scopes or "").split(",") if s.strip()]
    with ctx.session("token-put") as conn:
        if user is not None:
            check_lengths(conn, "assistant.user_tokens", {"user_id": ("--user", user)})
            row = tokens.put_user(conn, kek, user=user, provider=provider, access_token=access, refresh_token=refresh,
                                  expires_at=when, scopes=listed)
            ctx.show(render.Result([row], ["user", "provider", "expires_at", "scopes", "key", "updated"]))
            return
        check_lengths(conn, "minno.oauth_tokens", {"provider": ("--provider", provider.strip())})
        assert workspace is not None  # exactly one of --workspace and --user (checked first)
        row = tokens.put(conn, kek, workspace=workspace, provider=provider, access_token=access,
                         refresh_token=refresh, expires_at=when, scopes=listed,
                         allow_unknown_provider=allow_unknown_provider)
    ctx.show(render.Result([row], ["workspace", "provider", "expires_at", "scopes", "key", "updated"]))


@token_app.command("list")
def list_(
    workspace: Annotated[str | None, typer.Option("--workspace", help="Only this Slack team id.")] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="Only this provider.")] = None,
    expiring_within: Annotated[float | None, typer.Option("--expiring-within",
                                                          click_type=Duration(allow_zero=True, maximum=3650 * 86400,
                                                                              per=86400),
                                                          help="Only tokens expiring within this: days (a bare "
                                                          "number, e.g. 7) or a duration (12h, 1d12h); at most 3650 "
                                                          "days.")] = None,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """List stored tokens: workspace, provider, expiry, scopes, key. Never a token.

    Example: minnoctl token list --expiring-within 7
    """
    from minnoctl import render, tokens

    ctx = _context(database_url, fmt)
    with ctx.session("token-list") as conn:
        rows = tokens.list_tokens(conn, workspace=workspace, provider=provider, expiring_within_days=expiring_within)
    ctx.show(render.Result(rows, ["workspace", "provider", "expires_at", "scopes", "key", "has_refresh_token"]))


@token_app.command("keys")
def keys(fmt: Format = "table", database_url: DatabaseUrl = None) -> None:
    """Every data key: status, dates, and how many fields use it, per column.

    Example: minnoctl token keys --format json
    """
    from minnoctl import render, tokens

    ctx = _context(database_url, fmt)
    with ctx.session("token-keys") as conn:
        rows = tokens.keys(conn)
    ctx.show(render.Result(rows, ["key", "name", "status", "created_at", "activated_at", "retired_at", "master_key",
                                  "fields", "by_column"],
                           cells={"by_column": lambda counts: ", ".join(f"{k}={v}" for k, v in counts.items())}))


@token_app.command("verify")
def verify(fmt: Format = "table", database_url: DatabaseUrl = None) -> None:
    """Decrypt every encrypted field; list failures by column and row (never values). Exit 15 if any.

    Values that are not encrypted fields (plaintext stored before the guard refused it) are one line
    per column with their count.

    Example: minnoctl token verify
    """
    from minnoctl import render, tokens
    from minnoctl.errors import ExitCode

    ctx, kek = _with_key(database_url, fmt)
    with ctx.session("token-verify") as conn:
        checked, failures = tokens.verify(conn, kek)
    rows = [f.public() for f in failures]
    ctx.show(render.Result(rows, ["column", "row", "reason"], document=rows, text=bool(rows)))  # JSON: [] when none
    if failures:
        _note("%d of %d encrypted field(s) failed to decrypt", sum(f.count for f in failures), checked)
        raise typer.Exit(int(ExitCode.PARTIAL))
    _note("all %d encrypted field(s) decrypt", checked)


@token_app.command("retire")
def retire(key: Annotated[int, typer.Argument(metavar="KEY", click_type=Number(1, integer=True),
                                                   help="The key number (see `token keys`).")],
           database_url: DatabaseUrl = None) -> None:
    """Retire a data key and destroy its material; refused while any field uses it.

    Example: minnoctl token retire 3
    """
    from minnoctl import tokens

    with _context(database_url).session("token-retire") as conn:
        tokens.retire(conn, key)
    _note("data key %d is retired", key)


@token_app.command("rotate")
def rotate(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n",
                                          help="Print what would be re-encrypted, per column and key.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", click_type=Number(1, 100_000, integer=True),
                                            help="Rows per transaction.")] = 1000,
    max_runtime: Annotated[float | None, typer.Option("--max-runtime",
                                                      click_type=Duration(minimum=0.1, maximum=MAX_RUNTIME_S),
                                                      help="Stop cleanly between batches after this long (a duration: "
                                                      "90s, 5min, 1h30m; a bare number is seconds); a rerun "
                                                      "resumes.")] = None,
    master: Annotated[bool, typer.Option("--master", help="Re-wrap the data keys under MINNO_NEW_MASTER_KEY "
                                         "(or _FILE) instead; data rows stay byte-identical.")] = False,
    fmt: Format = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """Make a new data key active and re-encrypt every field with it, online; retire the old key.

    Exit 0 when done, 15 when stopped by --max-runtime or when damaged fields remain (listed).
    Plaintext values (not encrypted fields) are left as they are and listed per column; they keep
    no old key alive.
    Example: minnoctl token rotate --batch-size 500 --max-runtime 300
    """
    from minnoctl import crypto, render, tokens

    ctx, kek = _with_key(database_url, fmt)
    settings = ctx.settings
    if master:
        new = crypto.load_master_key(new=True)
        with ctx.session("token-rotate") as conn:
            numbers = tokens.rotate_master(conn, kek, new)
        _note("re-wrapped %d data key(s) under master key %s; set MINNO_MASTER_KEY to the new key now",
              len(numbers), new.fingerprint)
        return
    bar = render.progress_bar("re-encrypted")
    try:
        result = tokens.rotate(settings, kek, batch_size=batch_size, max_runtime=max_runtime, dry_run=dry_run,
                               progress=(lambda label, done, _batch: bar.update(label, done)) if bar else None)
    finally:
        if bar:
            bar.close()
    if dry_run:
        ctx.show(render.Result(result.plan, ["column", "key", "fields"], text=bool(result.plan),
                               document={"active": result.active, "to_reencrypt": result.plan}))
        if not result.plan:
            _note("nothing to re-encrypt: every field uses the active key %s (a rotation would still make a new "
                  "key)", result.active)
        return
    rows = [{"column": k, "reencrypted": v} for k, v in result.reencrypted.items()]
    ctx.show(render.Result(rows, ["column", "reencrypted"], document={
        "status": result.status, "active": result.active, "old": result.old, "reencrypted": result.reencrypted,
        "retired": result.retired, "failures": [f.public() for f in result.failures],
        "longest_transaction_ms": round(result.longest_transaction_ms, 1),
        "retire_transaction_ms": round(result.retire_ms, 1)}))
    for failure in result.failures[:20]:
        render.warn(f"{failure.column}: {failure.row} left as they are, {failure.reason}" if failure.not_a_field
                    else f"{failure.column} row {failure.row}: {failure.reason}")
    _note("rotation %s: active key %s, retired %s", result.status, result.active, result.retired or "none")
    raise typer.Exit(int(result.exit_code))


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
