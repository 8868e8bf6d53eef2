"""Prometheus metrics of the serving app, kept by the ingress and rendered on its GET /metrics.

Why not Ray's own metrics agent: its port is random unless set at `ray start`, and custom metrics
show up there only after ~10 s with replica tags. The ingress runs one replica, so one
process-local registry sees every request: counts are exact and a test can assert on them.
A private `CollectorRegistry` keeps these apart from anything else in the replica process.

Drift values live in the DriftMonitor replica; they are copied in from its report when /metrics is
scraped and exposed by a custom collector (counters that come from elsewhere cannot be `inc`-ed).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,)


class DriftCollector:
    """Exposes the latest DriftMonitor report; values are replaced on each `update`."""

    def __init__(self) -> None:
        self._state: dict[str, Any] = {}

    def update(self, state: dict[str, Any]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        latest = self._state.get("latest") or {}
        detected = GaugeMetricFamily("mlinfra_drift_detected",
                                     "1 if the latest window of served records drifted")
        detected.add_metric([], float(bool(latest.get("is_drift", False))))
        p_value = GaugeMetricFamily("mlinfra_drift_p_value", "Per-feature p-value, latest window",
                                    labels=["feature"])
        for feature, value in (latest.get("p_vals") or {}).items():
            p_value.add_metric([feature], float(value))
        windows = CounterMetricFamily("mlinfra_drift_windows", "Drift windows checked")
        windows.add_metric([], float(self._state.get("windows_checked", 0)))
        drifted = CounterMetricFamily("mlinfra_drift_windows_drifted", "Drift windows flagged")
        drifted.add_metric([], float(self._state.get("windows_drifted", 0)))
        yield from (detected, p_value, windows, drifted)


class ServeMetrics:
    """Every metric the ingress exports, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mlinfra_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("mlinfra_request_latency_seconds", "Ingress request latency",
                                 ["endpoint"], registry=r)
        self.predictions = Counter("mlinfra_predictions", "Records scored", registry=r)
        self.score = Histogram("mlinfra_prediction_score", "Fraud probability of scored records",
                               buckets=SCORE_BUCKETS, registry=r)
        self.drift_dropped = Counter("mlinfra_drift_dropped",
                                     "Scored records not handed to drift (pending cap or error)",
                                     registry=r)
        self.model_info = Gauge("mlinfra_model_info", "The served model (value is always 1)",
                                ["version", "alias"], registry=r)
        self.drift = DriftCollector()
        r.register(self.drift)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_scores(self, scores: Sequence[float]) -> None:
        self.predictions.inc(len(scores))
        for s in scores:
            self.score.observe(s)

    def set_model(self, version: str, alias: str) -> None:
        self.model_info.clear()  # one series: the model served now
        self.model_info.labels(version=version, alias=alias).set(1)

    def render(self) -> tuple[bytes, str]:
        """Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
