"""bench/cleanup: `minnoctl cleanup` on 1,000,000 chatbot conversations with 3,000,000 messages, half
of them overdue (inactive for 100 days, the rest for 10), against one raw `DELETE FROM
chatbot.conversations WHERE updated_at < now() - interval '90 days'` (its messages go by the
foreign key's cascade) of the same rows in the same run, each on its own copy of one database.

minnoctl archives every row it removes (conversations_archive, messages_archive) in batches of
about 50 ms; the raw DELETE archives nothing and holds its locks for the whole statement. A second
baseline, the raw floor of archiving, archives and deletes the same rows with two plain
statements in one transaction: what any archiving cleanup must at least do. Rows
per second count conversations and messages removed. Also the longest and the p99 batch
transaction of the cleanup.

Targets: >= 0.5x the raw DELETE's rows per second; p99 transaction <= 100 ms.

Runs on a throw-away embedded PostgreSQL (its own MINNO_HOME), or on MINNO_DATABASE_URL's server.

  python bench/cleanup.py [--conversations N] [--runs R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

RATE_TARGET = 0.5
DUE = "updated_at < now() - interval '90 days'"
P99_TARGET_MS = 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    n = args.conversations

    import psycopg

    from benchlib import report, server as bench_server
    from minnoctl import migrate, modules
    from minnoctl.config import load_settings

    with bench_server("bench_cleanup") as bench:
        dsn, new_db = bench.dsn, bench.new_db
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

        def raw_delete() -> tuple[float, int]:
            """The raw single DELETE: (seconds, rows removed)."""
            db = new_db(template)
            with psycopg.connect(dsn(db), autocommit=True) as conn:
                conn.execute("SET TimeZone = 'UTC'")
                t0 = time.perf_counter()
                deleted = conn.execute(f"DELETE FROM chatbot.conversations WHERE {DUE}").rowcount
                seconds = time.perf_counter() - t0
                left = conn.execute("SELECT count(*) FROM chatbot.messages").fetchone()[0]
            bench.drop([db])
            return seconds, deleted + (3 * n - left)

        def raw_archive() -> float:
            """The raw floor of archiving: the same rows archived and deleted by two plain statements in
            one transaction (what any archiving cleanup must at least write)."""
            db = new_db(template)
            with psycopg.connect(dsn(db)) as conn:
                conn.execute("SET TimeZone = 'UTC'")
                t0 = time.perf_counter()
                conn.execute(f"""INSERT INTO chatbot.messages_archive (id, conversation_id, role, content,
                                        created_at, metadata)
                                 SELECT m.id, m.conversation_id, m.role, m.content, m.created_at, m.metadata
                                   FROM chatbot.messages m JOIN chatbot.conversations c ON c.id = m.conversation_id
                                  WHERE {DUE.replace('updated_at', 'c.updated_at')}""")
                conn.execute(f"""WITH c AS (DELETE FROM chatbot.conversations WHERE {DUE}
                                            RETURNING id, user_id, created_at, updated_at, metadata)
                                 INSERT INTO chatbot.conversations_archive (id, user_id, created_at, updated_at,
                                        metadata) SELECT * FROM c""")
                conn.commit()
                seconds = time.perf_counter() - t0
            bench.drop([db])
            return seconds

        def minnoctl() -> tuple[float, float, dict]:
            """`minnoctl cleanup` as a process: (wall seconds, in-run seconds, the task's JSON)."""
            db = new_db(template)
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "minnoctl", "cleanup", "--only", "chatbot-conversations",
                                   "--format", "json"], env=dict(os.environ, MINNO_DATABASE_URL=dsn(db)),
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            bench.drop([db])
            if proc.returncode != 0:
                raise SystemExit(f"minnoctl cleanup failed: {proc.stderr}")
            doc = json.loads(proc.stdout)
            return seconds, doc["seconds"], doc["tasks"][0]

        ratios, floor_ratios, p99s, longest, rates, raw_rates, raw_secs = [], [], [], [], [], [], []
        for i in range(args.runs):  # interleaved, each on a fresh copy, the previous copy dropped first
            raw_s, raw_rows = raw_delete()
            floor_s = raw_archive()
            ours_s, in_run_s, task = minnoctl()
            assert task["archived"] == raw_rows, (task, raw_rows)
            rate, raw_rate, floor_rate = raw_rows / ours_s, raw_rows / raw_s, raw_rows / floor_s
            ratios.append(rate / raw_rate)
            rates.append(rate)
            raw_rates.append(raw_rate)
            raw_secs.append(raw_s)
            floor_ratios.append(floor_rate / raw_rate)
            p99s.append(task["p99_transaction_ms"])
            longest.append(task["longest_transaction_ms"])
            print(f"  run {i + 1}: raw DELETE {raw_rate:,.0f} rows/s ({raw_s:.1f} s, one transaction); raw archive + "
                  f"DELETE {floor_rate:,.0f} rows/s ({floor_rate / raw_rate:.2f}x); minnoctl cleanup {rate:,.0f} "
                  f"rows/s ({ours_s:.1f} s, {in_run_s:.1f} s in the run, {task['batches']} batches, p99 "
                  f"{task['p99_transaction_ms']:.0f} ms); ratio {ratios[-1]:.2f}", flush=True)
        ratio = statistics.median(ratios)
        p99 = max(p99s)
        print(f"rows: {raw_rows:,} ({raw_rows // 4:,} conversations and their messages)")
        print(f"ratio to the raw DELETE (median of same-run ratios): {ratio:.2f}  (target >= {RATE_TARGET}: "
              f"{'met' if ratio >= RATE_TARGET else 'NOT met'}); the raw archive + DELETE itself: "
              f"{statistics.median(floor_ratios):.2f}; minnoctl against that floor: "
              f"{statistics.median(r / f for r, f in zip(ratios, floor_ratios)):.2f}")
        report("cleanup", f"{statistics.median(rates):,.0f} rows/s",
               f"raw DELETE {statistics.median(raw_rates):,.0f} rows/s", ratio, f">= {RATE_TARGET}x",
               ratio >= RATE_TARGET)
        print(f"batch transactions: p99 {p99:.1f} ms (worst run), longest {max(longest):.1f} ms  "
              f"(target p99 <= {P99_TARGET_MS:.0f} ms: {'met' if p99 <= P99_TARGET_MS else 'NOT met'})")
        report("cleanup", f"p99 batch {p99:.1f} ms",
               f"raw DELETE 1 transaction {statistics.median(raw_secs) * 1000:,.0f} ms",
               p99 / (statistics.median(raw_secs) * 1000), f"<= {P99_TARGET_MS:.0f} ms", p99 <= P99_TARGET_MS)
        return 0 if ratio >= RATE_TARGET and p99 <= P99_TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
