"""The README documents what the code does: its exit-code table is the ExitCode enum, and every
configuration variable minnoctl reads is in its configuration tables."""

from __future__ import annotations

import re
from pathlib import Path

from minnoctl import config
from minnoctl.errors import EXIT_CODE_DOCS, ExitCode

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_exit_code_table_matches_the_enum():
    rows = {int(m.group(1)): (m.group(2), m.group(3).strip())
            for m in re.finditer(r"^\| (\d+) \| (\w*) \| (.+?) \|$", README, re.M)}
    for code in ExitCode:
        assert code.value in rows, f"exit code {code.value} ({code.name}) missing from the README"
        name, text = rows[code.value]
        assert name == code.name
        assert text == EXIT_CODE_DOCS[code]
    assert set(EXIT_CODE_DOCS) == set(ExitCode)


def test_every_configuration_variable_is_documented():
    variables = [*config.URL_VARS, *config.DB_VARS, *config.PG_SELECTORS, "PGPASSWORD", "DB_SSL_MODE",
                 "DB_SSL_CA", "DB_SSL_CERT", "DB_SSL_KEY", "DB_SSL_ENABLED", "DB_SSL_REJECT_UNAUTHORIZED",
                 "DB_CONNECTION_TIMEOUT", "DB_STATEMENT_TIMEOUT", "DB_QUERY_TIMEOUT", "DB_IDLE_TIMEOUT",
                 "DB_POOL_SIZE", "MINNO_HOME", "NO_COLOR", "MINNO_TEST_DATABASE_URL", "MINNO_MASTER_KEY",
                 "MINNO_MASTER_KEY_FILE", "MINNO_NEW_MASTER_KEY", "MINNO_NEW_MASTER_KEY_FILE",
                 "MINNOCTL_MIGRATIONS_DIR", "MINNOCTL_TRACEBACK"]
    source = (Path(config.__file__)).read_text()
    for var in variables:
        assert f"`{var}`" in README, f"{var} is not documented in the README"
    # and nothing documented as a DB_* setting is unknown to the code
    for var in set(re.findall(r"`(DB_[A-Z_]+)`", README)):
        assert var in source, f"README documents {var}, which config.py does not read"
