"""Prometheus alert rules (alerts.yml, unit tests in alerts_test.yml), an example scrape config
(prometheus.yml) and a Grafana dashboard (dashboard.json) for the serving app's mlinfra_* metrics."""

from pathlib import Path

MONITORING_DIR = Path(__file__).resolve().parent
ALERT_RULES = MONITORING_DIR / "alerts.yml"
ALERT_TESTS = MONITORING_DIR / "alerts_test.yml"
DASHBOARD = MONITORING_DIR / "dashboard.json"
PROMETHEUS_CONFIG = MONITORING_DIR / "prometheus.yml"
