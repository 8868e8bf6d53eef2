"""Prometheus metrics of the serving app, kept by the ingress and rendered on its GET /metrics.

Why not Ray's own metrics agent: its port is random unless set at `ray start`, and custom metrics
show up there only after ~10 s with replica tags. The ingress runs one replica, so one
process-local registry sees every request: counts are exact and a test can assert on them.
A private `CollectorRegistry` keeps these apart from anything else in the replica process.

Drift values live in the DriftMonitor replica; they are copied in from its report when /metrics is
scraped and exposed by a custom collector (counters that come from elsewhere cannot be `inc`-ed).
Every name is `mlinfra_*`; monitoring/alerts.yml and monitoring/dashboard.json use only these.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,)
# 0.2 s is a bucket edge: the latency SLO alert reads it exactly.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)


class DriftCollector:
    """Exposes the latest DriftMonitor report; values are replaced on each `update`."""

    def __init__(self) -> None:
        self._state: dict[str, Any] = {}

    def update(self, state: dict[str, Any]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        if not self._state:
            return
        s, latest = self._state, self._state.get("latest") or {}
        yield _gauge("mlinfra_drift_detected", "1 if the latest window of served records drifted",
                     float(bool(latest.get("is_drift", False))))
        yield _labelled("mlinfra_drift_p_value", "Per-feature test p-value, latest window", "feature",
                        (latest.get("p_vals") or {}).items())
        yield _labelled("mlinfra_drift_statistic", "Per-feature test statistic (KS distance or "
                        "chi-square), latest window", "feature", (latest.get("distances") or {}).items())
        tests = latest.get("tests") or {}
        yield _labelled("mlinfra_drift_test_p_value", "p-value of each window test (features: "
                        "smallest per-feature p-value)", "test", ((k, v["p_val"]) for k, v in tests.items()))
        yield _labelled("mlinfra_drift_test_detected", "1 if the test rejected on the latest window",
                        "test", ((k, float(v["is_drift"])) for k, v in tests.items()))
        yield _gauge("mlinfra_drift_window_fill_ratio", "Buffered records / window size",
                     s.get("buffered", 0) / max(s.get("window_size", 1), 1))
        yield _gauge("mlinfra_drift_last_check_timestamp_seconds", "When the latest window was checked",
                     float(s.get("last_check") or 0.0))
        for name, key, doc in (("mlinfra_drift_rows", "rows_seen", "Records received by the monitor"),
                               ("mlinfra_drift_rows_sampled_out", "rows_sampled_out",
                                "Records not checked by design (drift.sample_fraction, drift.max_rows_per_s)"),
                               ("mlinfra_drift_windows", "windows_checked", "Drift windows checked"),
                               ("mlinfra_drift_windows_drifted", "windows_drifted", "Drift windows flagged")):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], float(s.get(key, 0)))
            yield counter
        online = s.get("online")
        if online and online.get("test_stat") is not None:
            yield _gauge("mlinfra_drift_online_statistic", "MMDDriftOnline test statistic", online["test_stat"])
            yield _gauge("mlinfra_drift_online_threshold", "MMDDriftOnline threshold now", online["threshold"])
            alarms = CounterMetricFamily("mlinfra_drift_online_alarms", "MMDDriftOnline alarms")
            alarms.add_metric([], float(online["alarms"]))
            yield alarms


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], float(value))
    return g


def _labelled(name: str, doc: str, label: str, items: Iterable[tuple[str, float]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in items:
        g.add_metric([key], float(value))
    return g


class ServeMetrics:
    """Every metric the ingress exports, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("mlinfra_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("mlinfra_request_latency_seconds", "Ingress request latency",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("mlinfra_predictions", "Records scored", registry=r)
        self.score = Histogram("mlinfra_prediction_score", "Fraud probability of scored records",
                               buckets=SCORE_BUCKETS, registry=r)
        self.invalid = Counter("mlinfra_invalid_fields", "Validation errors (422) by field",
                               ["field"], registry=r)
        self.missing = Counter("mlinfra_missing_features", "Scored records with a nullable field absent",
                               ["feature"], registry=r)
        self.lookups = Counter("mlinfra_online_lookups", "Online feature lookups by view and outcome "
                               "(hit, miss, invalid key, stale past the TTL)", ["view", "outcome"], registry=r)
        self.lookup_misses = Counter("mlinfra_online_lookup_misses",
                                     "Lookups that found no fresh value (miss, invalid or stale)", registry=r)
        self.online_age = Gauge("mlinfra_online_features_age_seconds",
                                "Age of the online store's latest materialization", registry=r)
        self.drift_dropped = Counter("mlinfra_drift_dropped",
                                     "Scored records not handed to drift (pending cap or error)",
                                     registry=r)
        self.model_info = Gauge("mlinfra_model_info", "The served model (value is always 1)",
                                ["version", "alias"], registry=r)
        self.model_created = Gauge("mlinfra_model_created_timestamp_seconds",
                                   "When the served model version was registered or built", registry=r)
        self.model_seen = Gauge("mlinfra_model_last_switch_timestamp_seconds",
                                "When the ingress first saw the served version", registry=r)
        self.drift = DriftCollector()
        r.register(self.drift)
        self._version: tuple[str, str] | None = None

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_scores(self, scores: Sequence[float]) -> None:
        self.predictions.inc(len(scores))
        for s in scores:
            self.score.observe(s)

    def observe_invalid(self, fields: Iterable[str]) -> None:
        for name in fields:
            self.invalid.labels(field=name).inc()

    def observe_missing(self, records: Sequence[dict[str, Any]], nullable: Sequence[str]) -> None:
        for name in nullable:
            absent = sum(1 for r in records if r.get(name) is None)
            if absent:
                self.missing.labels(feature=name).inc(absent)

    def observe_online(self, lookups: dict[str, dict[str, int]], age_s: float | None) -> None:
        for view, counts in lookups.items():
            for outcome, n in counts.items():
                if n:
                    self.lookups.labels(view=view, outcome=outcome).inc(n)
                    if outcome != "hit":
                        self.lookup_misses.inc(n)
        if age_s is not None:
            self.online_age.set(age_s)

    def set_model(self, version: str, alias: str, created_at: float | None) -> None:
        """Record the version that answered; a change replaces the info series (one series)."""
        if self._version == (version, alias):
            return
        self._version = (version, alias)
        self.model_info.clear()
        self.model_info.labels(version=version, alias=alias).set(1)
        self.model_seen.set(time.time())
        if created_at is not None:
            self.model_created.set(created_at)

    def render(self) -> tuple[bytes, str]:
        """Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
