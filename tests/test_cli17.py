"""Issue 17, items 8 and 9: global options after the command, short flags that mean one thing,
`config show` listing every setting, `.env` like the environment, one duration syntax, known
token providers and not-found exit codes. Real processes and a real PostgreSQL where the
behaviour is the CLI's; the option tree is walked as Click builds it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from minnoctl.cli import app
from minnoctl.errors import ExitCode, UsageError

try:  # recent Typer vendors click as typer._click
    from typer._click import Context
except ImportError:  # pragma: no cover - older Typer on real click
    from click import Context

REPO = Path(__file__).resolve().parent.parent
ONE_SERVER = pytest.mark.parametrize("any_server", ["pg15"], indirect=True)  # one server only: lean


def _tree():
    root = typer.main.get_command(app)
    found = []

    def walk(cmd, path):
        found.append((path, cmd))
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, path + (name,))

    walk(root, ())
    return root, found


def _leaves():
    return [(p, c) for p, c in _tree()[1] if not hasattr(c, "commands")]


def _command(*path: str):
    cmd = _tree()[0]
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _long(param) -> str:
    return max(list(param.opts) + list(param.secondary_opts), key=len)


def _options(cmd, ctx):
    params = [p for p in cmd.params if p.param_type_name == "option"]
    help_option = cmd.get_help_option(ctx)
    return params + ([help_option] if help_option is not None else [])


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, home: Path | None = None):
    full = dict(os.environ)
    for name in ("MINNO_BACKUP_DIR", "MINNO_MASTER_KEY", "MINNO_MASTER_KEY_FILE", "MINNO_ENV"):
        full.pop(name, None)
    full["PYTHONPATH"] = str(REPO)
    if home is not None:
        full["MINNO_HOME"] = str(home)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "minnoctl", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=120)


# ---------------------------------------------------------------------------------------------
# item 8: global options after the command; short flags


GLOBAL = ("--quiet", "-q", "--traceback")


def test_every_command_parses_the_global_options_and_lists_them():
    for path, cmd in _leaves():
        ctx = Context(cmd, info_name=path[-1])
        parser = cmd.make_parser(ctx)
        parsed = set(parser._short_opt) | set(parser._long_opt)
        missing = [flag for flag in GLOBAL if flag not in parsed]
        assert not missing, f"minnoctl {' '.join(path)} does not take {missing} after the command"
        text = cmd.get_help(ctx)
        assert "--quiet" in text and "--traceback" in text, " ".join(path)


def test_short_flags_are_unique_and_help_lists_what_click_parses():
    root, tree = _tree()
    root_ctx = Context(root, info_name="minnoctl")
    inherited = {o: _long(p) for p in _options(root, root_ctx) for o in p.opts if len(o) == 2}
    meanings: dict[str, set[str]] = {}
    for path, cmd in tree:
        ctx = Context(cmd, info_name=path[-1] if path else "minnoctl")
        shorts: dict[str, set[str]] = {o: {long} for o, long in inherited.items()}
        parser = cmd.make_parser(ctx)
        by_param: dict[int, set[str]] = {}
        for flag, opt in {**parser._short_opt, **parser._long_opt}.items():
            by_param.setdefault(id(opt.obj), set()).add(flag)
        for param in _options(cmd, ctx):
            for o in param.opts:
                if len(o) == 2:
                    shorts.setdefault(o, set()).add(_long(param))
                    meanings.setdefault(o, set()).add(_long(param))
            record = param.get_help_record(ctx)
            if record is None:  # hidden
                continue
            listed = set(re.findall(r"(?<![\w<\[-])(--?[A-Za-z0-9][\w-]*)", record[0]))
            assert listed == by_param.get(id(param), set()), \
                f"minnoctl {' '.join(path)}: --help lists {sorted(listed)} for {_long(param)}, " \
                f"Click parses {sorted(by_param.get(id(param), set()))}"
        clashes = {o: sorted(v) for o, v in shorts.items() if len(v) > 1}
        assert not clashes, f"minnoctl {' '.join(path)}: one short flag, two options: {clashes}"
    # and across the product a short flag means one thing (-m: --modules, or migrate new's one --module)
    meanings["-m"] -= {"--module"}
    mixed = {o: sorted(v) for o, v in meanings.items() if len(v) > 1}
    assert not mixed, f"short flags meaning different things in different commands: {mixed}"


def test_every_dry_run_takes_n():
    """README: -n is always --dry-run, so every command with --dry-run takes -n (token rotate and
    backup prune lacked it)."""
    root, tree = _tree()
    lacking = [" ".join(path) for path, cmd in tree for p in getattr(cmd, "params", [])
               if "--dry-run" in getattr(p, "opts", []) and "-n" not in p.opts]
    assert not lacking, f"--dry-run without -n: {lacking}"


def test_traceback_and_quiet_after_the_command_real_process(tmp_path):
    before = _run("--traceback", "config", "show", env={"MINNO_DATABASE_URL": "mysql://x@y/z"}, cwd=tmp_path)
    after = _run("config", "show", "--traceback", env={"MINNO_DATABASE_URL": "mysql://x@y/z"}, cwd=tmp_path)
    assert before.returncode == after.returncode == ExitCode.CONFIG, after.stderr
    assert "Traceback" in after.stderr and "Traceback" in before.stderr
    assert "mysql" in after.stderr.splitlines()[-1]


@ONE_SERVER
def test_quiet_after_the_command_silences_notes(migrated, tmp_path):
    mods = ("--modules", "minno,chatbot,assistant,supervisor,slackbot")  # PG15 has no pgvector
    loud = _run("db", "init", *mods, "--database-url", migrated, cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert loud.stderr.strip(), "db init says something on stderr (a note)"
    for args in (("--quiet", "db", "init"), ("db", "init", "--quiet"), ("db", "init", "-q")):
        quiet = _run(*args, *mods, "--database-url", migrated, cwd=tmp_path)
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stderr == "", (args, quiet.stderr)
    # cleanup's --quiet is the same option as the global one, wherever it is given
    for args in (("-q", "cleanup"), ("cleanup", "-q"), ("cleanup", "--quiet")):
        proc = _run(*args, "--database-url", migrated, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert (proc.stdout, proc.stderr) == ("", ""), args


def test_readme_says_global_options_may_follow_the_command():
    text = (REPO / "README.md").read_text()
    assert "Global options go before the command" not in text
    assert "--quiet" in text


# ---------------------------------------------------------------------------------------------
# item 9: durations


# (command path, option, seconds per bare number)
DURATIONS = [
    (("db", "init"), "--lock-timeout", 1), (("db", "init"), "--ddl-lock-timeout", 1),
    (("migrate",), "--lock-timeout", 1), (("migrate",), "--ddl-lock-timeout", 1),
    (("migrate", "rollback"), "--lock-timeout", 1), (("migrate", "rollback"), "--ddl-lock-timeout", 1),
    (("seed",), "--lock-timeout", 1),
    (("cleanup",), "--max-runtime", 1), (("token", "rotate"), "--max-runtime", 1),
    (("ports", "allocate"), "--lease", 1), (("ports", "reserve"), "--ttl", 1),
    (("ports", "range", "add"), "--cooldown", 1), (("ports", "check"), "--timeout", 1),
    (("local", "stop"), "--wait", 1),
    (("token", "list"), "--expiring-within", 86400), (("backup", "prune"), "--keep-days", 86400),
]
FORMS = {"5min": 300, "500ms": 0.5, "1h30m": 5400, "1d": 86400, "2m": 120, "90s": 90, "30": None}


def _param(path, option):
    cmd = _command(*path)
    return cmd, next(p for p in cmd.params if option in p.opts)


@pytest.mark.parametrize("path,option,per", DURATIONS, ids=[f"{' '.join(p)} {o}" for p, o, _ in DURATIONS])
def test_every_duration_option_takes_the_one_syntax(path, option, per):
    cmd, param = _param(path, option)
    ctx = Context(cmd, info_name=path[-1])
    accepted = 0
    for text, seconds in FORMS.items():
        want = (30.0 if seconds is None else seconds / per)
        try:
            got = param.type_cast_value(ctx, text)
        except UsageError as exc:
            assert "out of range" in exc.message, (option, text, exc.message)
            continue
        assert got == pytest.approx(want), (option, text, got)
        accepted += 1
    assert accepted >= 2, f"{option} accepts hardly any of {list(FORMS)}"
    with pytest.raises(UsageError) as bad:
        param.type_cast_value(ctx, "5 parsecs")
    message = bad.value.message
    assert option in message and "5min" in message and "1h30m" in message and "500ms" in message, message
    assert bad.value.exit_code == ExitCode.USAGE
    assert "duration" in (param.get_help_record(ctx)[1] + param.get_help_record(ctx)[0]).lower()


def test_a_bad_duration_is_one_line_exit_2_real_process(tmp_path):
    proc = _run("cleanup", "--max-runtime", "soon", cwd=tmp_path, env={"MINNO_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert proc.returncode == ExitCode.USAGE
    assert len(proc.stderr.strip().splitlines()) == 1 and "1h30m" in proc.stderr, proc.stderr


def test_older_than_and_seed_times_take_the_same_units():
    from minnoctl import cleanup, seed

    assert cleanup.parse_ages(["chatbot-conversations=120"]) == {"chatbot-conversations": 120}
    assert cleanup.parse_ages(["chatbot-conversations=1d12h"]) == {"chatbot-conversations": 1.5}
    with pytest.raises(UsageError, match="1h30m"):
        cleanup.parse_ages(["chatbot-conversations=soon"])
    import datetime as dt
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert seed.parse_time("now-5min", now) == now - dt.timedelta(minutes=5)
    assert seed.parse_time("now-1h30m+500ms", now) == now - dt.timedelta(minutes=90) + dt.timedelta(milliseconds=500)


def test_duration_variables_take_the_same_syntax(tmp_path):
    proc = _run("config", "show", "--format", "json", cwd=tmp_path, home=tmp_path / "home",
                env={"DB_STATEMENT_TIMEOUT": "1h30m", "DB_CONNECTION_TIMEOUT": "5min", "DB_IDLE_TIMEOUT": "90s"})
    assert proc.returncode == 0, proc.stderr
    values = {r["setting"]: r["value"] for r in json.loads(proc.stdout)}
    assert values["statement_timeout"] == "5400000 ms" and values["connect_timeout"] == "300000 ms"
    assert values["idle_session_timeout"] == "90000 ms"
    bad = _run("config", "show", cwd=tmp_path, home=tmp_path / "home", env={"DB_STATEMENT_TIMEOUT": "a while"})
    assert bad.returncode == ExitCode.CONFIG and "1h30m" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# item 9: config show, .env


def test_config_show_lists_every_setting_with_its_source_and_masks_secrets(tmp_path):
    from minnoctl import crypto

    key = crypto.encode_key(crypto.generate_key())
    (tmp_path / ".env").write_text(f"MINNO_BACKUP_DIR={tmp_path / 'bk'}\nMINNO_ENV=staging\n")
    proc = _run("config", "show", "--format", "json", cwd=tmp_path, home=tmp_path / "home",
                env={"MINNO_MASTER_KEY": key, "MINNOCTL_MIGRATIONS_DIR": str(tmp_path / "mig"), "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    rows = {r["setting"]: r for r in json.loads(proc.stdout)}
    assert key not in proc.stdout and key[:20] not in proc.stdout
    assert rows["master_key"]["source"] == "MINNO_MASTER_KEY" and "****" in str(rows["master_key"]["value"])
    assert rows["backup_dir"] == {"setting": "backup_dir", "value": str(tmp_path / "bk"),
                                  "source": ".env: MINNO_BACKUP_DIR"}
    assert rows["environment"]["value"] == "staging" and rows["environment"]["source"] == ".env: MINNO_ENV"
    assert rows["migrations_dir"]["source"] == "MINNOCTL_MIGRATIONS_DIR"
    assert rows["no_color"]["source"] == "NO_COLOR"
    for name in ("database", "new_master_key", "minno_home", "pg_dump", "pg_restore", "psql", "seeds_dir",
                 "pg_bindir", "traceback"):
        assert name in rows, name
    assert rows["new_master_key"]["source"] == "default"
    (tmp_path / "plain").mkdir()
    default = _run("config", "show", "--format", "json", cwd=tmp_path / "plain", home=tmp_path / "home")
    rows = {r["setting"]: r for r in json.loads(default.stdout)}
    assert rows["backup_dir"]["source"].startswith("default")


@ONE_SERVER
def test_a_backup_dir_in_dotenv_is_where_backup_create_writes(migrated, tmp_path):
    folder = tmp_path / "from-dotenv"
    folder.mkdir()
    (tmp_path / ".env").write_text(f"MINNO_BACKUP_DIR={folder}\nMINNO_DATABASE_URL={migrated}\n")
    proc = _run("backup", "create", "--format", "custom", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert any(folder.iterdir()), "the backup went elsewhere"
    assert not (tmp_path / "backups").exists()
    listed = _run("backup", "list", "--format", "json", cwd=tmp_path)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1, listed.stderr


@ONE_SERVER
def test_a_master_key_in_dotenv_is_used_like_the_variable(migrated, tmp_path):
    from minnoctl import crypto

    key = crypto.encode_key(crypto.generate_key())
    (tmp_path / ".env").write_text(f"MINNO_MASTER_KEY={key}\nMINNO_DATABASE_URL={migrated}\n")
    proc = _run("token", "keys", "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    verify = _run("token", "verify", cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    show = _run("config", "show", "--format", "json", cwd=tmp_path)
    rows = {r["setting"]: r for r in json.loads(show.stdout)}
    assert rows["master_key"]["source"] == ".env: MINNO_MASTER_KEY" and key not in show.stdout


# ---------------------------------------------------------------------------------------------
# item 9: providers and not-found


@ONE_SERVER
def test_providers_and_not_found(migrated, tmp_path):
    import psycopg

    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T17', 'w')")
    token = tmp_path / "tok"
    token.write_text("xoxb-secret-17")
    from minnoctl import crypto

    env = {"MINNO_DATABASE_URL": migrated, "MINNO_MASTER_KEY": crypto.encode_key(crypto.generate_key())}
    typo = _run("token", "put", "--workspace", "T17", "--provider", "slakc", "--access-token-file", str(token),
                cwd=tmp_path, env=env)
    assert typo.returncode == ExitCode.USAGE, typo.stderr
    line = typo.stderr.strip()
    assert len(line.splitlines()) == 1 and "slakc" in line and "slack" in line and "notion" in line and "google" in line
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM minno.oauth_tokens").fetchone()[0] == 0
    ok = _run("token", "put", "--workspace", "T17", "--provider", "slakc", "--allow-unknown-provider",
              "--access-token-file", str(token), cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    # once stored, it is a provider of this database: no flag needed to replace it
    again = _run("token", "put", "--workspace", "T17", "--provider", "slakc", "--access-token-file", str(token),
                 cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "--provider" in _run("token", "put", "--help").stdout and "notion" in _run("token", "put", "--help").stdout

    nowhere = _run("token", "put", "--workspace", "T404", "--provider", "slack", "--access-token-file", str(token),
                   cwd=tmp_path, env=env)
    assert nowhere.returncode == ExitCode.NOT_FOUND, nowhere.stderr
    assert "T404" in nowhere.stderr and len(nowhere.stderr.strip().splitlines()) == 1
    listed = _run("token", "list", "--workspace", "T404", cwd=tmp_path, env=env)
    assert listed.returncode == ExitCode.NOT_FOUND and "T404" in listed.stderr, listed.stderr
    assert _run("token", "list", "--workspace", "T17", cwd=tmp_path, env=env).returncode == 0
    retired = _run("token", "retire", "999", cwd=tmp_path, env=env)
    assert retired.returncode == ExitCode.NOT_FOUND and "999" in retired.stderr, retired.stderr


@ONE_SERVER
def test_production_and_health_variables_in_dotenv_count(migrated, tmp_path):
    from minnoctl import crypto

    (tmp_path / ".env").write_text(f"MINNO_ENV=production\nMINNO_DATABASE_URL={migrated}\n"
                                   f"MINNOCTL_HEALTH_ONLY=connections\nMINNO_MASTER_KEY={crypto.encode_key(crypto.generate_key())}\n")
    refused = _run("seed", "--yes", "--modules", "minno", cwd=tmp_path)
    assert refused.returncode == ExitCode.PRODUCTION, refused.stderr
    assert "MINNO_ENV=production" in refused.stderr
    health = _run("health", "--format", "json", cwd=tmp_path)
    assert [c["name"] for c in json.loads(health.stdout)["checks"]] == ["connections"], health.stdout
