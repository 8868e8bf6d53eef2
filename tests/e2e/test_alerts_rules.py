"""The alert rules pass `promtool check rules` and their unit tests (`promtool test rules`), and the
tests would catch a broken rule. promtool comes from Debian's `prometheus` package (.ci/run)."""

import os
import shutil
import subprocess

import pytest
import yaml

from mlinfra_ray.monitoring import ALERT_RULES, ALERT_TESTS, PROMETHEUS_CONFIG

# CI (.ci/run) installs prometheus and sets MLINFRA_REQUIRE_PROMETHEUS: there a missing promtool fails.
MISSING = shutil.which("promtool") is None and not os.environ.get("MLINFRA_REQUIRE_PROMETHEUS")
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(MISSING, reason="promtool missing: apt-get install -y prometheus")]


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def test_rules_and_config_check():
    for args in (("check", "rules", str(ALERT_RULES)), ("check", "config", str(PROMETHEUS_CONFIG))):
        proc = promtool(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rule_unit_tests_pass():
    proc = promtool("test", "rules", str(ALERT_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(("alert", "broken_expr"), [
    ("MlinfraHighErrorRate", 'sum(rate(mlinfra_requests_total{status=~"5.."}[5m])) > 1e9'),
    ("MlinfraDriftSustained", "max(mlinfra_drift_detected) == 2"),
    ("MlinfraLatencySLO",
     'histogram_quantile(0.5, sum by (le) (rate(mlinfra_request_latency_seconds_bucket[5m]))) > 1'),
])
def test_rule_tests_fail_when_a_rule_breaks(tmp_path, alert, broken_expr):
    rules = yaml.safe_load(ALERT_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = broken_expr
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts_test.yml")
    proc = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert proc.returncode != 0 and alert in proc.stdout + proc.stderr
