"""`health --format openmetrics` and `health --serve` (issue 19, item 5): the exposition parsed by the
Prometheus client's own OpenMetrics parser and compared with `health --format json`, on real servers;
the HTTP endpoint as a real process on a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from minnoctl import health
from minnoctl.config import load_settings
from minnoctl.health.openmetrics import CONTENT_TYPE
from pgcluster import free_port
from test_seed import env_for

STATUS = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3, "N/A": -1}
FAMILIES = {"minnoctl_health_status", "minnoctl_health_overall_status", "minnoctl_health_metric",
            "minnoctl_health_metric_warning", "minnoctl_health_metric_critical", "minnoctl_health_up",
            "minnoctl_health_duration_seconds", "minnoctl_health_last_run_timestamp_seconds"}


def families(text: str) -> dict:
    assert text.endswith("# EOF\n")
    found = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(f.type == "gauge" for f in found.values())
    return found


def samples(family) -> list:
    return list(family.samples)


def test_the_exposition_matches_the_json_of_the_same_report(migrated):
    report = health.run(load_settings(env={"MINNO_DATABASE_URL": migrated}))
    doc = report.as_dict()
    found = families(report.openmetrics())
    assert set(found) == FAMILIES
    target = {"target": doc["target"]}
    assert "password" not in doc["target"] and ":" not in doc["target"].split("@")[0].split("//")[-1]
    assert {s.labels["check"]: s.value for s in samples(found["minnoctl_health_status"])} == \
        {c["name"]: STATUS[c["status"]] for c in doc["checks"]}
    assert all(s.labels["target"] == doc["target"] for f in found.values() for s in f.samples)
    assert [(s.labels, s.value) for s in found["minnoctl_health_overall_status"].samples] == \
        [(target, STATUS[doc["status"]])]
    assert [(s.labels, s.value) for s in found["minnoctl_health_up"].samples] == [(target, 1)]
    assert found["minnoctl_health_duration_seconds"].unit == "seconds"
    assert 0 < found["minnoctl_health_duration_seconds"].samples[0].value < 120
    metrics = {(s.labels["check"], s.labels["metric"]): s.value for s in found["minnoctl_health_metric"].samples}
    assert metrics == {(c["name"], k): pytest.approx(v) for c in doc["checks"] for k, v in c["metrics"].items()}
    assert metrics, "no perfdata at all"
    # the limits: one gauge per limit a value has, with the side it alerts on
    perf = {(c.name, k): v for c in report.checks for k, v in c.perfdata.items()}
    warnings = {(s.labels["check"], s.labels["metric"]): (s.value, s.labels["alert"])
                for s in found["minnoctl_health_metric_warning"].samples}
    assert warnings == {key: (float(str(v[2]).rstrip(":")), "below" if isinstance(v[2], str) else "above")
                        for key, v in perf.items() if v[2] is not None}
    units = {(s.labels["check"], s.labels["metric"]): s.labels.get("unit")
             for s in found["minnoctl_health_metric"].samples}
    assert units == {key: v[1] or None for key, v in perf.items()}


def test_the_cli_prints_it_with_the_exit_code_of_the_status(cli, migrated):
    as_json = cli("health", "--format", "json", env=env_for(migrated))
    result = cli("health", "--format", "openmetrics", env=env_for(migrated))
    assert "Traceback" not in result.stderr, result.stderr
    doc = json.loads(as_json.stdout)
    assert result.exit_code == as_json.exit_code == STATUS[doc["status"]]
    found = families(result.stdout)
    assert {s.labels["check"]: s.value for s in found["minnoctl_health_status"].samples} == \
        {c["name"]: STATUS[c["status"]] for c in doc["checks"]}
    assert {(s.labels["check"], s.labels["metric"]) for s in found["minnoctl_health_metric"].samples} == \
        {(c["name"], k) for c in doc["checks"] for k in c["metrics"]}
    assert found["minnoctl_health_overall_status"].samples[0].value == STATUS[doc["status"]]


def test_a_server_that_does_not_answer_is_up_0_and_critical(cli):
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nowhere"
    result = cli("health", "--format", "openmetrics", env=env_for(url))
    assert result.exit_code == 2
    found = families(result.stdout)
    assert found["minnoctl_health_up"].samples[0].value == 0
    assert found["minnoctl_health_overall_status"].samples[0].value == 2
    assert found["minnoctl_health_status"].samples[0].labels == {"check": "connection", "target": url}


def test_label_values_with_a_quote_a_backslash_and_a_newline_round_trip():
    odd = 'a "quoted" \\ back\nslash'
    check = health.Check(odd, health.Status.NOT_AVAILABLE, perfdata={odd: (1.5, "%", 90.0, "5:")})
    text = health.Report([check], target=f"db {odd}").openmetrics()
    found = families(text)
    status = found["minnoctl_health_status"].samples
    assert [(s.labels, s.value) for s in status] == [({"check": odd, "target": f"db {odd}"}, -1)]
    assert [(s.labels, s.value) for s in found["minnoctl_health_metric"].samples] == \
        [({"check": odd, "metric": odd, "unit": "%", "target": f"db {odd}"}, 1.5)]
    assert [(s.labels["alert"], s.value) for s in found["minnoctl_health_metric_warning"].samples] == [("above", 90)]
    assert [(s.labels["alert"], s.value) for s in found["minnoctl_health_metric_critical"].samples] == [("below", 5)]
    assert found["minnoctl_health_overall_status"].samples[0].value == 0  # N/A counts as OK


# -- --serve ----------------------------------------------------------------------------------------

def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


class Served:
    def __init__(self, db_url: str, *args: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ) | env_for(db_url)
        self.proc = subprocess.Popen([sys.executable, "-m", "minnoctl", "health", "--serve",
                                      f"127.0.0.1:{self.port}", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                get(self.base + "/nothing")
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.communicate()
                assert time.monotonic() < deadline, "the server never listened"
                time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_serve_metrics_cached_livez_readyz_and_sigterm(migrated):
    served = Served(migrated, "--cache-for", "5m")
    try:
        code, kind, first = get(served.base + "/metrics")
        assert (code, kind) == (200, CONTENT_TYPE)
        found = families(first)
        assert found["minnoctl_health_up"].samples[0].value == 1
        assert {s.labels["check"] for s in found["minnoctl_health_status"].samples} >= {"connection", "migrations"}
        again = get(served.base + "/metrics")[2]
        assert again == first  # one run in the interval: the same timestamp and duration
        assert get(served.base + "/livez")[0] == 200
        assert get(served.base + "/readyz")[0] == 200
        assert get(served.base + "/other")[0] == 404
    finally:
        code, out, err = served.stop()
    assert code == 0, err
    assert out == ""
    assert "Traceback" not in err and "\x1b[" not in err
    logged = [ln for ln in err.splitlines() if "serve:" in ln]
    assert len(logged) == 6, err  # the readiness poll, two scrapes, livez, readyz, the 404: one line each


@pytest.mark.parametrize("any_server", ["server"], indirect=True)
def test_serve_on_an_empty_database_is_live_but_not_ready(database):
    served = Served(database)
    try:
        assert get(served.base + "/livez")[0] == 200
        assert get(served.base + "/readyz")[0] == 503
        assert families(get(served.base + "/metrics")[2])["minnoctl_health_up"].samples[0].value == 1
    finally:
        code, _out, err = served.stop(signal.SIGINT)  # right after a request: Ctrl-C stops it too
    assert code == 0, err


def test_serve_with_a_bad_address_or_a_probe_is_a_usage_error(run_minnoctl):
    for args in (["--serve", "nowhere"], ["--serve", ":99999"], ["--serve", ":9187", "--live"],
                 ["--serve", ":9187", "--list"]):
        result = run_minnoctl("health", *args, env={"MINNO_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"},
                              timeout=60)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "not an address" in result.stderr or "leave out --" in result.stderr, result.stderr
