"""Data drift: alibi-detect detectors rebuilt from the bundle, and tumbling windows of traffic.

Detectors are never unpickled: they are rebuilt from the bundle's reference sample
(drift_reference.npy: numeric columns after log, category indices as float32, see
`features.transforms.drift_matrix`), its reference scores and parameters (bundle part "drift"), so
a bundle stays plain files. One window is checked by up to three tests:

- per feature: KS (numeric) and chi-square (categorical) in one TabularDrift, corrected across
  features (Bonferroni or FDR) — the report can say *which* column moved;
- multivariate MMD (pytorch backend) on subsamples, over an encoding where numeric columns are
  standardized and categories one-hot — catches joint shifts no single column shows;
- prediction scores: KS against the scores the model gave the reference rows.

The window is flagged if any test rejects. `p_val` is the family-wise level: each test runs at
p_val / n_tests (Bonferroni across tests), so a clean window is flagged with probability <= p_val.
An optional online detector (MMDDriftOnline) updates per record with alarms calibrated to an
expected run time. `DriftWindow` is plain Python, unit-testable in milliseconds.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pyarrow as pa

from mlinfra_ray.settings import DriftSettings


def build_detector(reference: np.ndarray, categories: dict[int, int], p_val: float,
                   correction: str = "bonferroni") -> Any:
    """Per-feature TabularDrift over `reference`; `categories` maps column index → vocab size.

    Categories go to alibi as {idx: None} (inferred from the reference) rather than {idx: n}: with
    an explicit n, a category absent from both reference and window (e.g. the never-seen OOV slot)
    gives chi-square a zero expected count and it raises.
    """
    from alibi_detect.cd import TabularDrift  # heavy (~5 s): import only when a detector is built

    ref = _check_reference(reference, categories)
    return TabularDrift(ref, p_val=p_val, correction=correction,
                        categories_per_feature={i: None for i in categories})


def _check_reference(reference: np.ndarray, categories: dict[int, int]) -> np.ndarray:
    ref = np.asarray(reference, dtype=np.float32)
    if ref.ndim != 2 or len(ref) < 2:
        raise ValueError(f"drift reference must be a 2-D sample of rows, got shape {ref.shape}")
    for idx, n in categories.items():
        col = ref[:, idx]
        if not (np.all(col == np.round(col)) and col.min() >= 0 and col.max() < n):
            raise ValueError(f"drift reference column {idx}: values are not category indices < {n}")
    return ref


def check_window(detector: Any, window: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per-feature tests of one window against the reference; a JSON-ready report."""
    x = np.asarray(window, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"window shape {x.shape} does not match {len(names)} drift columns")
    out = detector.predict(x, drift_type="batch", return_p_val=True, return_distance=True)["data"]
    return {
        "is_drift": bool(out["is_drift"]),
        "p_vals": {n: float(p) for n, p in zip(names, out["p_val"], strict=True)},
        "distances": {n: float(d) for n, d in zip(names, out["distance"], strict=True)},
        "threshold": float(out["threshold"]),  # per-feature level after the correction
        "n": int(len(x)),
    }


class Encoder:
    """Numeric columns standardized by reference statistics, categorical columns one-hot / sqrt(2).

    Scaled so one category change moves a row as far as a one-sigma numeric change: the MMD's
    Gaussian kernel then weighs both kinds of column alike.
    """

    def __init__(self, reference: np.ndarray, categories: dict[int, int]) -> None:
        self.categories = dict(categories)
        self.numeric = [i for i in range(reference.shape[1]) if i not in self.categories]
        num = reference[:, self.numeric].astype(np.float64)
        self.mean, self.std = num.mean(axis=0), np.maximum(num.std(axis=0), 1e-6)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        blocks = [(x[:, self.numeric] - self.mean) / self.std]
        for idx, n in self.categories.items():
            codes = np.clip(x[:, idx].astype(np.int64), 0, n - 1)
            blocks.append(np.eye(n)[codes] / np.sqrt(2.0))
        return np.concatenate(blocks, axis=1).astype(np.float32)


class DriftSuite:
    """Every window test of one bundle, at a family-wise level of `settings.p_val`."""

    def __init__(self, reference: np.ndarray, names: list[str], categories: dict[int, int],
                 settings: DriftSettings, reference_scores: np.ndarray | None = None,
                 seed: int = 0) -> None:
        from alibi_detect.cd import KSDrift, MMDDrift

        ref = _check_reference(reference, categories)
        self.names, self.rng = list(names), np.random.default_rng(seed)
        self.score_test = settings.score_test and reference_scores is not None
        self.alpha = settings.p_val / (1 + int(settings.mmd.enabled) + int(self.score_test))
        self.features = build_detector(ref, categories, self.alpha, settings.correction)
        self.encode = Encoder(ref, categories)
        self.max_window = settings.mmd.max_window
        self.mmd_interval_s, self._mmd_at = settings.mmd.min_interval_s, -math.inf
        self.mmd = MMDDrift(self.encode(self._sample(ref, settings.mmd.reference_size)),
                            backend="pytorch", p_val=self.alpha, device="cpu",
                            n_permutations=settings.mmd.n_permutations) if settings.mmd.enabled else None
        self.scores = KSDrift(np.asarray(reference_scores, np.float32)[:, None],
                              p_val=self.alpha) if self.score_test else None
        self.online = OnlineDrift(self.encode, self._sample(ref, settings.online.reference_size),
                                  settings) if settings.online.enabled else None

    def _sample(self, x: np.ndarray, n: int) -> np.ndarray:
        return x if len(x) <= n else x[np.sort(self.rng.choice(len(x), size=n, replace=False))]

    def check(self, window: np.ndarray, scores: np.ndarray | None = None) -> dict[str, Any]:
        """One window (and the scores served for it) → a JSON-ready report.

        `tests` holds the tests that ran on this window; `skipped` the ones left out to keep the
        check's CPU bounded (MMD within `mmd.min_interval_s` of the last one). Alpha stays split
        over every enabled test, so a window's false-alarm rate is <= p_val either way.
        """
        report = check_window(self.features, window, self.names)
        tests: dict[str, Any] = {"features": {"is_drift": report["is_drift"],
                                              "p_val": min(report["p_vals"].values())}}
        skipped = []
        if self.mmd is not None and time.monotonic() - self._mmd_at < self.mmd_interval_s:
            skipped.append("mmd")
        elif self.mmd is not None:
            self._mmd_at = time.monotonic()
            out = self.mmd.predict(self.encode(self._sample(np.asarray(window), self.max_window)))["data"]
            tests["mmd"] = {"is_drift": bool(out["is_drift"]), "p_val": float(out["p_val"]),
                            "distance": float(out["distance"])}
        if self.scores is not None and scores is not None:
            out = self.scores.predict(np.asarray(scores, np.float32)[:, None])["data"]
            tests["score"] = {"is_drift": bool(out["is_drift"]), "p_val": float(out["p_val"][0]),
                              "distance": float(out["distance"][0])}
        return {**report, "is_drift": any(t["is_drift"] for t in tests.values()),
                "tests": tests, "skipped": skipped, "alpha": self.alpha}


class OnlineDrift:
    """MMDDriftOnline over encoded records; after an alarm the run restarts (state reset)."""

    def __init__(self, encode: Encoder, reference: np.ndarray, settings: DriftSettings) -> None:
        from alibi_detect.cd import MMDDriftOnline

        cfg = settings.online
        if cfg.n_bootstraps <= cfg.ert:  # thresholds are (1 - 1/ert)-quantiles of the bootstraps
            raise ValueError(f"drift.online.n_bootstraps ({cfg.n_bootstraps}) must exceed ert ({cfg.ert:g})")
        self.encode, self.alarms = encode, 0
        self.detector = MMDDriftOnline(encode(reference), ert=cfg.ert, window_size=cfg.window_size,
                                       backend="pytorch", n_bootstraps=cfg.n_bootstraps,
                                       device="cpu", verbose=False)
        self.state: dict[str, Any] = {"alarms": 0, "test_stat": None, "threshold": None, "time": 0}

    def update(self, rows: np.ndarray) -> dict[str, Any]:
        for x in self.encode(rows):
            out = self.detector.predict(x)["data"]
            self.state = {"alarms": self.alarms, "test_stat": float(out["test_stat"]),
                          "threshold": float(out["threshold"]), "time": int(out["time"])}
            if out["is_drift"]:
                self.alarms += 1
                self.state["alarms"] = self.alarms
                self.detector.reset_state()
        return self.state


def suite_from_bundle(bundle: Any, settings: DriftSettings) -> DriftSuite:
    """The bundle's detectors: its reference sample, column spec and (if stored) reference scores.

    The bundle supplies what was measured on training data; `settings` (serving config) supplies the
    test policy — level, correction, which tests — so policy changes need no retraining.
    """
    spec = bundle.parts["drift"]
    categories = {int(k): int(v) for k, v in spec["categories"].items()}
    scores = spec.get("reference_scores")
    return DriftSuite(bundle.drift_reference(), list(spec["columns"]), categories, settings,
                      None if scores is None else np.asarray(scores, dtype=np.float32))


def reference_part(state: dict[str, Any], train: pa.Table, settings: DriftSettings, seed: int,
                   model: Any) -> tuple[dict[str, Any], np.ndarray]:
    """The bundle's drift part and reference sample: a seeded sample of the training window.

    The part holds the drift columns, categorical sizes, the level, and the model's scores of the
    sampled rows (`reference_scores`, for the score test) — everything `suite_from_bundle` needs.
    """
    from mlinfra_ray.bundle import score
    from mlinfra_ray.features.transforms import drift_columns, drift_matrix, transform

    rng = np.random.default_rng(seed)
    n = min(settings.reference_size, train.num_rows)
    rows = train.take(pa.array(np.sort(rng.choice(train.num_rows, size=n, replace=False))))
    names, categories = drift_columns(state)
    scores = score(model, transform(state, rows))
    part = {"columns": names, "categories": {str(k): v for k, v in categories.items()},
            "p_val": settings.p_val, "window_size": settings.window_size,
            "reference_scores": [round(float(s), 7) for s in scores]}
    return part, drift_matrix(state, rows)


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

    def clear_buffer(self) -> int:
        """Discard a partly filled window (e.g. rows of a model no longer served); returns its size."""
        dropped, self._chunks, self._buffered = self._buffered, [], 0
        return dropped

    def record(self, report: dict[str, Any]) -> None:
        """Keep a finished check as the latest report and count it."""
        self.latest = report
        self.windows_checked += 1
        self.windows_drifted += int(bool(report["is_drift"]))

    def state(self) -> dict[str, Any]:
        return {"latest": self.latest, "windows_checked": self.windows_checked,
                "windows_drifted": self.windows_drifted, "rows_seen": self.rows_seen,
                "buffered": self._buffered, "window_size": self.window_size}
