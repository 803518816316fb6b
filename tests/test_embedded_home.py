"""The suite never touches the developer's own embedded database (issue 17, item 12): the default
home and the developer's MINNO_HOME are replaced for the whole session by the session's home, which
real minnoctl processes inherit, and a test naming the developer's home fails."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import DEVELOPER_HOMES
from minnoctl.config import default_minno_home, load_settings
from minnoctl.local import Embedded


def test_the_default_home_in_process_is_the_sessions(minno_home):
    # what a test that configures nothing gets (tests/test_live_and_yoyo.py connects with env={})
    settings = load_settings(env={})
    assert settings.minno_home == minno_home
    assert settings.minno_home not in DEVELOPER_HOMES


@pytest.mark.skipif(sys.platform != "linux", reason="platformdirs follows XDG_DATA_HOME on Linux only")
@pytest.mark.parametrize("keep_minno_home", [True, False])
def test_a_real_minnoctl_process_sees_the_sessions_home(run_minnoctl, minno_home, keep_minno_home):
    env = None if keep_minno_home else {"MINNO_HOME": ""}
    if not keep_minno_home:  # without MINNO_HOME: the default home, from the inherited XDG_DATA_HOME
        assert default_minno_home() == minno_home
    result = run_minnoctl("local", "status", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["home"] == str(minno_home)


def test_naming_the_developers_home_fails_the_test():
    for home in DEVELOPER_HOMES:
        with pytest.raises(AssertionError, match="developer's own embedded home"):
            Embedded(home)
    assert os.environ["MINNO_HOME"] not in {str(h) for h in DEVELOPER_HOMES}
