"""Review of issue 17: gaps found after the helpers' work (each test failed on the code before its fix)."""

from __future__ import annotations

import pytest

from minnoctl.config import parse_duration, span_seconds
from minnoctl.errors import UsageError


@pytest.mark.parametrize("text", ["١٢", "١٢s", "1٢m", "٣h30m", "１０s"])
def test_duration_refuses_non_ascii_digits(text):
    # Python's \d and float() take Arabic-Indic or full-width digits; a duration takes 0-9 only
    with pytest.raises(UsageError, match="is not a duration"):
        parse_duration(text, "--wait")
    with pytest.raises(ValueError):
        span_seconds(text)


def test_duration_option_with_non_ascii_digits_is_one_line_exit_2(cli):
    result = cli("local", "stop", "--wait", "١٢")
    assert result.exit_code == 2
    assert "is not a duration" in result.stderr and "Traceback" not in result.stderr
