"""bench/cleanup: `minnoctl cleanup` on 1,000,000 chatbot conversations with 3,000,000 messages, half
of them overdue (inactive for 100 days, the rest for 10), against one raw `DELETE FROM
chatbot.conversations WHERE updated_at < now() - interval '90 days'` (its messages go by the
foreign key's cascade) of the same rows in the same run, each on its own copy of one database.

minnoctl archives every row it removes (conversations_archive, messages_archive) in batches of
about 60 ms; the raw DELETE archives nothing and holds its locks for the whole statement. A second
baseline, the raw floor of archiving, archives and deletes the same rows with two plain
statements in one transaction: what any archiving cleanup must at least do. Rows
per second count conversations and messages removed. Also the longest and the p99 batch
transaction of the cleanup.

Targets: >= 0.5x the raw DELETE's rows per second; p99 transaction <= 100 ms.

Runs on a throw-away embedded PostgreSQL (its own MINNO_HOME), or on MINNO_DATABASE_URL's server.

  python bench/cleanup.py [--conversations N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RATE_TARGET = 0.5
P99_TARGET_MS = 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.conversations

    import psycopg

    from minnoctl import migrate, modules
    from minnoctl.config import load_settings
    from minnoctl.connection import connect_kwargs, resolve

    with tempfile.TemporaryDirectory() as tmp:
        if not os.environ.get("MINNO_DATABASE_URL"):
            os.environ["MINNO_HOME"] = str(Path(tmp) / "home")
        base = load_settings(os.environ.get("MINNO_DATABASE_URL"))
        admin = connect_kwargs(base, resolve(base)) | {"dbname": "postgres"}
        names: list[str] = []

        def dsn(name: str) -> str:
            return " ".join(f"{k}='{v}'" for k, v in (admin | {"dbname": name}).items())

        def new_db(template: str | None = None) -> str:
            name = f"bench_cleanup_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(**admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
            names.append(name)
            return name

        try:
            template = new_db()
            migrate.init(load_settings(dsn(template)), modules.parse_list("chatbot"))
            t0 = time.perf_counter()
            with psycopg.connect(dsn(template), autocommit=True) as conn:
                server = conn.execute("SHOW server_version").fetchone()[0]
                conn.execute("SET TimeZone = 'UTC'")
                conn.execute("DROP INDEX chatbot.idx_messages_content_search")  # built once, after the fill
                conn.execute("""INSERT INTO chatbot.conversations (id, user_id, created_at, updated_at, metadata)
                                SELECT gen_random_uuid(), 'user-' || (g %% 50000),
                                       now() - make_interval(days => 120), now() - make_interval(days =>
                                       CASE WHEN g %% 2 = 0 THEN 100 ELSE 10 END, secs => g %% 86400),
                                       '{"source": "bench"}'
                                  FROM generate_series(1, %s) g""", (n,))
                conn.execute("""INSERT INTO chatbot.messages (conversation_id, role, content, created_at)
                                SELECT c.id, r.role, 'Message ' || r.role || ' about the quarterly report',
                                       c.updated_at - make_interval(mins => r.k)
                                  FROM chatbot.conversations c,
                                       (VALUES ('user', 3), ('assistant', 2), ('system', 1)) r (role, k)""")
                conn.execute("CREATE INDEX idx_messages_content_search ON chatbot.messages "
                             "USING gin (to_tsvector('english', content))")
                conn.execute("VACUUM ANALYZE")
                size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
            print(f"bench/cleanup: PostgreSQL {server}, {n:,} conversations with {3 * n:,} messages, half overdue "
                  f"({size}, made in {time.perf_counter() - t0:.0f} s)", flush=True)

            # the raw single DELETE
            raw_db = new_db(template)
            with psycopg.connect(dsn(raw_db), autocommit=True) as conn:
                conn.execute("SET TimeZone = 'UTC'")
                due = conn.execute("SELECT count(*) FROM chatbot.conversations WHERE updated_at < "
                                   "now() - interval '90 days'").fetchone()[0]
                t0 = time.perf_counter()
                deleted = conn.execute("DELETE FROM chatbot.conversations WHERE updated_at < "
                                       "now() - interval '90 days'").rowcount
                raw_s = time.perf_counter() - t0
                left = conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0]
            raw_rows = deleted + (3 * n - left)
            print(f"raw DELETE: {deleted:,} conversations + {3 * n - left:,} messages in {raw_s:.1f} s, one "
                  f"transaction: {raw_rows / raw_s:,.0f} rows/s", flush=True)

            # the raw floor of archiving: the same rows archived and deleted by two plain statements in one
            # transaction (what any archiving cleanup must at least write), timed the same way
            floor_db = new_db(template)
            with psycopg.connect(dsn(floor_db)) as conn:
                conn.execute("SET TimeZone = 'UTC'")
                t0 = time.perf_counter()
                conn.execute("""INSERT INTO chatbot.messages_archive (id, conversation_id, role, content, created_at,
                                       metadata)
                                SELECT m.id, m.conversation_id, m.role, m.content, m.created_at, m.metadata
                                  FROM chatbot.messages m JOIN chatbot.conversations c ON c.id = m.conversation_id
                                 WHERE c.updated_at < now() - interval '90 days'""")
                conn.execute("""WITH c AS (DELETE FROM chatbot.conversations WHERE updated_at < now() - interval '90 days'
                                           RETURNING id, user_id, created_at, updated_at, metadata)
                                INSERT INTO chatbot.conversations_archive (id, user_id, created_at, updated_at, metadata)
                                SELECT * FROM c""")
                conn.commit()
                floor_s = time.perf_counter() - t0
            print(f"raw archive + DELETE (same rows, two statements, one transaction): {floor_s:.1f} s: "
                  f"{raw_rows / floor_s:,.0f} rows/s, {(raw_rows / floor_s) / (raw_rows / raw_s):.2f}x the raw DELETE",
                  flush=True)

            ours_db = new_db(template)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "minnoctl", "cleanup", "--only", "chatbot-conversations",
                                   "--format", "json"], env=dict(os.environ, MINNO_DATABASE_URL=dsn(ours_db)),
                                  capture_output=True, text=True)
            ours_s = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"minnoctl cleanup failed: {proc.stderr}")
            task = json.loads(proc.stdout)["tasks"][0]
            ours_rows = task["archived"]  # conversations and their messages, each archived then deleted
            assert task["rows"] == due == deleted, (task, due, deleted)
            print(f"minnoctl cleanup: {task['rows']:,} conversations + {ours_rows - task['rows']:,} messages "
                  f"archived and deleted in {ours_s:.1f} s, {task['batches']:,} batches: "
                  f"{ours_rows / ours_s:,.0f} rows/s", flush=True)
            in_run_s = json.loads(proc.stdout)["seconds"]  # without interpreter start-up and connecting
            print(f"   of which the run itself (batches and pauses): {in_run_s:.1f} s: {ours_rows / in_run_s:,.0f} rows/s; "
                  f"ratio to the raw DELETE {(ours_rows / in_run_s) / (raw_rows / raw_s):.2f}", flush=True)
            print(f"   against the raw archive + DELETE: {(ours_rows / ours_s) / (raw_rows / floor_s):.2f}", flush=True)
            ratio = (ours_rows / ours_s) / (raw_rows / raw_s)
            p99 = task["p99_transaction_ms"]
            print(f"ratio (whole process): {ratio:.2f}  (target >= {RATE_TARGET}: {'met' if ratio >= RATE_TARGET else 'NOT met'})")
            print(f"batch transactions: p99 {p99:.1f} ms, longest {task['longest_transaction_ms']:.1f} ms "
                  f"(raw DELETE: one transaction of {raw_s * 1000:,.0f} ms)  (target p99 <= {P99_TARGET_MS:.0f} ms: "
                  f"{'met' if p99 <= P99_TARGET_MS else 'NOT met'})")
            return 0 if ratio >= RATE_TARGET and p99 <= P99_TARGET_MS else 1
        finally:
            with psycopg.connect(**admin, autocommit=True) as conn:
                for name in names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not os.environ.get("MINNO_DATABASE_URL"):
                from minnoctl.local import Embedded

                Embedded(Path(os.environ["MINNO_HOME"])).stop(wait_s=10)


if __name__ == "__main__":
    sys.exit(main())
