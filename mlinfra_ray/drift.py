"""Data drift: alibi-detect TabularDrift rebuilt from the bundle, and tumbling windows of traffic.

The detector is never unpickled: it is rebuilt from the bundle's reference sample
(drift_reference.npy) and parameters (bundle part "drift"), so a bundle stays plain files. Numeric
columns get a two-sample KS test, categorical columns (integer category indices stored as float32,
see `features.transforms.drift_matrix`) a chi-square test; TabularDrift's default Bonferroni
correction turns the per-feature p-values into one batch-level decision.

`DriftWindow` is plain Python (no Ray, no alibi): the windowing and bookkeeping the serve monitor
runs, unit-testable in milliseconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def build_detector(reference: np.ndarray, categories: dict[int, int], p_val: float) -> Any:
    """TabularDrift over `reference`; `categories` maps categorical column index → vocab size.

    The categories are passed to alibi as {idx: None} (inferred from the reference) rather than
    {idx: n}: with an explicit n, a category absent from both reference and window (e.g. the OOV
    slot, never seen in training) gives chi-square a zero expected count and it raises.
    """
    from alibi_detect.cd import TabularDrift  # heavy (~5 s): import only when a detector is built

    ref = np.asarray(reference, dtype=np.float32)
    if ref.ndim != 2 or len(ref) < 2:
        raise ValueError(f"drift reference must be a 2-D sample of rows, got shape {ref.shape}")
    for idx, n in categories.items():
        col = ref[:, idx]
        if not (np.all(col == np.round(col)) and col.min() >= 0 and col.max() < n):
            raise ValueError(f"drift reference column {idx}: values are not category indices < {n}")
    return TabularDrift(ref, p_val=p_val, categories_per_feature={i: None for i in categories})


def check_window(detector: Any, window: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Test one window against the reference; a JSON-ready report."""
    x = np.asarray(window, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"window shape {x.shape} does not match {len(names)} drift columns")
    out = detector.predict(x, drift_type="batch", return_p_val=True, return_distance=True)["data"]
    return {
        "is_drift": bool(out["is_drift"]),
        "p_vals": {n: float(p) for n, p in zip(names, out["p_val"], strict=True)},
        "distances": {n: float(d) for n, d in zip(names, out["distance"], strict=True)},
        "threshold": float(out["threshold"]),  # per-feature level after Bonferroni: p_val / F
        "n": int(len(x)),
    }


class DriftWindow:
    """Accumulates rows into tumbling windows of `window_size` and keeps the check results.

    Non-overlapping windows: each served record is tested exactly once, and a report describes a
    fixed number of the most recent records.
    """

    def __init__(self, window_size: int) -> None:
        if window_size < 2:
            raise ValueError("window_size must be at least 2")
        self.window_size = window_size
        self._chunks: list[np.ndarray] = []
        self._buffered = 0
        self.rows_seen = 0
        self.windows_checked = 0
        self.windows_drifted = 0
        self.latest: dict[str, Any] | None = None

    def add(self, rows: np.ndarray) -> list[np.ndarray]:
        """Buffer `rows`; return every window that is now full (often none, rarely several)."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError(f"rows must be 2-D, got shape {rows.shape}")
        self.rows_seen += len(rows)
        self._chunks.append(rows)
        self._buffered += len(rows)
        full = []
        while self._buffered >= self.window_size:
            data = np.concatenate(self._chunks)
            full.append(data[: self.window_size])
            rest = data[self.window_size:]
            self._chunks, self._buffered = ([rest] if len(rest) else []), len(rest)
        return full

    def record(self, report: dict[str, Any]) -> None:
        """Keep a finished check as the latest report and count it."""
        self.latest = report
        self.windows_checked += 1
        self.windows_drifted += int(bool(report["is_drift"]))

    def state(self) -> dict[str, Any]:
        return {"latest": self.latest, "windows_checked": self.windows_checked,
                "windows_drifted": self.windows_drifted, "rows_seen": self.rows_seen,
                "buffered": self._buffered, "window_size": self.window_size}


def detector_from_bundle(bundle: Any) -> tuple[Any, list[str]]:
    """Detector and column names from a loaded `Bundle` (JSON keys of categories are strings)."""
    spec = bundle.parts["drift"]
    categories = {int(k): int(v) for k, v in spec["categories"].items()}
    detector = build_detector(bundle.drift_reference(), categories, float(spec["p_val"]))
    return detector, list(spec["columns"])
