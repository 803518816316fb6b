"""bench/token (bench/token_rotate.py: a file named token.py would shadow the standard library):
`token rotate` over N encrypted tokens (default 1,000,000), rows per second, against a
raw SQL rewrite of the same rows in the same run: COPY of the new ciphertexts into a temporary table
and one `UPDATE ... FROM` (its ciphertexts are computed beforehand and not timed, so the baseline is
the database floor alone). Also the longest transaction of the rotation.

Targets: rotation >= 0.5x the raw rate; no single rotation transaction longer than 1 s.

Runs on a throw-away embedded PostgreSQL (its own MINNO_HOME), or on MINNO_DATABASE_URL's server
(a database is created and dropped there).

  python bench/token_rotate.py [--rows N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

RATE_TARGET = 0.5
BATCH_TARGET_MS = 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--per-workspace", type=int, default=10, help="tokens per workspace (providers)")
    args = parser.parse_args()

    import psycopg

    from benchlib import report
    from minnoctl import crypto, migrate, modules, tokens
    from minnoctl.config import load_settings
    from minnoctl.connection import connect_kwargs, resolve

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MINNO_HOME", str(Path(tmp) / "home"))
        base = load_settings(os.environ.get("MINNO_DATABASE_URL"))
        admin = connect_kwargs(base, resolve(base)) | {"dbname": "postgres"}
        name = f"bench_token_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            server = conn.execute("SHOW server_version").fetchone()[0]
        dsn = " ".join(f"{k}='{v}'" for k, v in (admin | {"dbname": name}).items())
        settings = load_settings(dsn)
        kek = crypto.MasterKey(crypto.generate_key(), "bench")
        try:
            migrate.init(settings, modules.parse_list("minno"))
            with psycopg.connect(dsn, autocommit=True) as conn:
                ring = tokens.ensure_active_key(conn, kek)
                t0 = time.perf_counter()
                ids = _fill(conn, ring, args.rows, args.per_workspace)
                fill_s = time.perf_counter() - t0
                conn.execute("VACUUM ANALYZE minno.oauth_tokens")

            # the rotation, as `minnoctl token rotate` runs it
            t0 = time.perf_counter()
            result = tokens.rotate(settings, kek, batch_size=args.batch_size)
            rotate_s = time.perf_counter() - t0
            assert result.status == "done", result.status
            assert result.reencrypted["minno.oauth_tokens.access_token_encrypted"] == args.rows

            # the raw floor: the same rows rewritten by COPY + one UPDATE ... FROM
            with psycopg.connect(dsn, autocommit=True) as conn:
                ring = crypto.Keyring.load(conn, kek)
                key = ring.active
                values = [crypto.encrypt_field(key.key, key.number, "minno", "oauth_tokens", "access_token_encrypted",
                                               i, f"token-{i}-rewritten") for i in ids]
                conn.execute("VACUUM ANALYZE minno.oauth_tokens")
                t0 = time.perf_counter()
                with conn.transaction():
                    conn.execute("CREATE TEMP TABLE rewrite (id uuid, value text) ON COMMIT DROP")
                    with conn.cursor().copy("COPY rewrite (id, value) FROM STDIN") as copy:
                        for i, v in zip(ids, values):
                            copy.write_row((i, v))
                    conn.execute("UPDATE minno.oauth_tokens t SET access_token_encrypted = r.value FROM rewrite r "
                                 "WHERE t.id = r.id")
                raw_s = time.perf_counter() - t0
        finally:
            with psycopg.connect(**admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not os.environ.get("MINNO_DATABASE_URL"):
                from minnoctl.local import Embedded

                Embedded(Path(os.environ["MINNO_HOME"])).stop()

    rate, raw_rate = args.rows / rotate_s, args.rows / raw_s
    ratio = rate / raw_rate
    met = ratio >= RATE_TARGET and result.longest_transaction_ms <= BATCH_TARGET_MS
    print(f"token: PostgreSQL {server}, {args.rows:,} encrypted tokens (made in {fill_s:.0f} s), batch size "
          f"{args.batch_size}")
    print(f"token: rotate {rate:,.0f} rows/s ({rotate_s:.1f} s, decrypt + encrypt + verify + retire included); "
          f"raw COPY + UPDATE ... FROM {raw_rate:,.0f} rows/s ({raw_s:.1f} s, one transaction); ratio {ratio:.2f} "
          f"(target >= {RATE_TARGET}); longest rotation transaction {result.longest_transaction_ms:.0f} ms, "
          "writers' wait "
          f"at the retire barrier {result.retire_ms:.0f} ms (target <= "
          f"{BATCH_TARGET_MS:.0f} ms): {'met' if met else 'NOT met'}")
    report("token_rotate", f"{rate:,.0f} rows/s", f"raw COPY + UPDATE {raw_rate:,.0f} rows/s", ratio,
           f">= {RATE_TARGET}x", ratio >= RATE_TARGET)
    report("token_rotate", f"longest transaction {result.longest_transaction_ms:.0f} ms",
           f"raw 1 transaction {raw_s * 1000:,.0f} ms", result.longest_transaction_ms / (raw_s * 1000),
           f"<= {BATCH_TARGET_MS:.0f} ms", result.longest_transaction_ms <= BATCH_TARGET_MS)
    return 0 if met else 1


def _fill(conn, ring, rows: int, per_workspace: int) -> list[uuid.UUID]:
    """Workspaces and `rows` oauth tokens with encrypted access tokens, by COPY."""
    key = ring.active
    workspaces = (rows + per_workspace - 1) // per_workspace
    ws_ids = [uuid.uuid4() for _ in range(workspaces)]
    with conn.cursor().copy("COPY minno.workspaces (id, slack_team_id, slack_team_name) FROM STDIN") as copy:
        for n, w in enumerate(ws_ids):
            copy.write_row((w, f"T{n:09d}", f"team {n}"))
    ids = []
    from minnoctl import crypto

    with conn.cursor().copy("COPY minno.oauth_tokens (id, workspace_id, provider, access_token_encrypted) "
                            "FROM STDIN") as copy:
        for n in range(rows):
            tid = uuid.uuid4()
            ids.append(tid)
            copy.write_row((tid, ws_ids[n // per_workspace], f"p{n % per_workspace}",
                            crypto.encrypt_field(key.key, key.number, "minno", "oauth_tokens",
                                                 "access_token_encrypted", tid, f"token-{n}")))
    return ids


if __name__ == "__main__":
    sys.exit(main())
