"""Alert rules and the Grafana dashboard only use metrics the app really exports; serve.yaml is a
valid Serve config whose import path builds the app from Hydra overrides."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mlinfra_ray.monitoring import ALERT_RULES, ALERT_TESTS, DASHBOARD, PROMETHEUS_CONFIG
from mlinfra_ray.serve.metrics import ServeMetrics

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\b(mlinfra_[a-z0-9_]+)")


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name a busy app exports (each metric touched once, drift with all tests on)."""
    m = ServeMetrics()
    m.observe_request("/predict", 200, 0.01)
    m.observe_scores([0.2])
    m.observe_invalid(["amount"])
    m.observe_missing([{"a": None}], ["a"])
    m.observe_online({"user_amount": {"hit": 1, "miss": 1, "stale": 1}}, age_s=5.0)
    m.drift_dropped.inc()
    m.set_model("3", "champion", created_at=1.0)
    test = {"is_drift": True, "p_val": 0.001}
    m.drift.update({"latest": {"is_drift": True, "p_vals": {"amount": 0.001}, "distances": {"amount": 0.3},
                               "tests": {"features": test, "mmd": test, "score": test}},
                    "windows_checked": 2, "windows_drifted": 1, "rows_seen": 10, "buffered": 3,
                    "window_size": 5, "last_check": 1.0,
                    "online": {"alarms": 1, "test_stat": 0.1, "threshold": 0.2, "time": 5}})
    body, _ = m.render()
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def referenced(text: str) -> set[str]:
    return set(METRIC.findall(text))


def test_alert_rules_use_only_exported_metrics(exported):
    rules = yaml.safe_load(ALERT_RULES.read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    used = referenced(exprs)
    assert used and used <= exported, used - exported
    names = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    assert {"MlinfraHighErrorRate", "MlinfraLatencySLO", "MlinfraDriftSustained", "MlinfraNoTraffic",
            "MlinfraStaleModel", "MlinfraStaleOnlineFeatures"} <= set(names)


def test_every_alert_has_a_promtool_test_that_expects_it_to_fire():
    rules = yaml.safe_load(ALERT_RULES.read_text())
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    firing = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert firing == {r["alert"] for g in rules["groups"] for r in g["rules"]}


def test_dashboard_queries_use_only_exported_metrics(exported):
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert len(exprs) >= 15 and all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    used = referenced(" ".join(exprs))
    assert used <= exported, used - exported
    # the things the issue asks a dashboard to show
    for metric in ("mlinfra_requests_total", "mlinfra_request_latency_seconds_bucket", "mlinfra_drift_p_value",
                   "mlinfra_prediction_score_bucket", "mlinfra_online_lookups_total", "mlinfra_model_info"):
        assert metric in used
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_example_prometheus_config_scrapes_job_mlinfra_with_the_rules():
    cfg = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["mlinfra"]  # the alerts select job="mlinfra"


def test_serve_config_file_is_valid_and_points_at_the_builder():
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    cfg = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve.yaml").read_text()))
    (app,) = cfg.applications
    builder = import_attr(app.import_path)
    assert len(inspect.signature(builder).parameters) == 1  # Serve passes `args` as one dict
    assert all(isinstance(o, str) and "=" in o for o in app.args["overrides"])
    assert {d.name for d in app.deployments} <= {"Ingress", "Predictor", "DriftMonitor"}
