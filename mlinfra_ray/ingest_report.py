"""Ingest counters in Prometheus text format, written next to the lake after every run.

The file follows the node_exporter textfile-collector convention (`*.prom`, replaced atomically),
so a Prometheus scrape of that collector, or any file-based pipeline, picks the numbers up. Counters
are cumulative over the snapshot (they restart when the contract changes and the snapshot is
rebuilt, which Prometheus treats as a counter reset); `last_run` gauges describe the latest run,
including one stopped by the error budget.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

METRICS_FILE = "metrics.prom"
OUTCOMES = {"in": "rows_in", "clean": "clean", "quarantined": "quarantined",
            "duplicate": "duplicates_removed"}


def write_metrics(lake: Path, manifest: dict[str, Any] | None, result: Any, over_budget: bool) -> Path:
    registry = CollectorRegistry()
    rows = Counter("mlinfra_ingest_rows", "Rows ingested into the current snapshot, by outcome",
                   ["outcome"], registry=registry)
    reasons = Counter("mlinfra_ingest_quarantined_rows", "Quarantined rows in the current snapshot, by "
                      "reason code (a row with two reasons counts under both)", ["reason"], registry=registry)
    files = Gauge("mlinfra_ingest_files", "Input files recorded in the snapshot manifest", registry=registry)
    last = Gauge("mlinfra_ingest_last_run_rows", "Rows of the latest run, by outcome", ["outcome"],
                 registry=registry)
    for outcome, key in OUTCOMES.items():
        rows.labels(outcome).inc((manifest or {}).get(key, 0))
        last.labels(outcome).set(getattr(result, key))
    for code, count in (manifest or {}).get("reasons", {}).items():
        reasons.labels(code).inc(count)
    files.set(len((manifest or {}).get("files", [])))
    Gauge("mlinfra_ingest_last_run_quarantine_ratio", "Quarantined / rows in, latest run",
          registry=registry).set(result.quarantine_fraction)
    Gauge("mlinfra_ingest_last_run_over_budget", "1 if the latest run was stopped by the error budget",
          registry=registry).set(1 if over_budget else 0)
    Gauge("mlinfra_ingest_last_run_duration_seconds", "Wall time of the latest successful run",
          registry=registry).set(result.seconds)
    Gauge("mlinfra_ingest_last_run_timestamp_seconds", "When the latest run ended",
          registry=registry).set_to_current_time()
    path = lake / METRICS_FILE
    write_to_textfile(str(path), registry)
    return path
