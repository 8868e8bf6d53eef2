"""Training data: the time-ordered split, fitted features, class-imbalance handling and the
materialized Ray Datasets the trainer (or every trial of a sweep) reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mlinfra_ray.features.transforms import fit_feature_state, transform
from mlinfra_ray.settings import Settings, SplitSettings, TrainerSettings

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    train: pa.Table  # the earliest window (before any resampling)
    valid: pa.Table  # the next window: early stopping, threshold, calibration
    test: pa.Table  # the latest window: the holdout nothing was fitted on
    state: dict[str, Any]  # fitted FeatureState (JSON-ready)
    pos_weight: float  # BCE weight of the positive class (1.0 unless imbalance=pos_weight)
    datasets: dict[str, Any]  # {"train", "valid"}: materialized Ray Datasets of {"x", "y"}

    @property
    def n_features(self) -> int:
        return len(self.state["feature_names"])


def time_split(table: pa.Table, event_time: str, split: SplitSettings) -> tuple[pa.Table, ...]:
    """Train on the earliest rows, validate on the next, test on the latest window."""
    table = table.sort_by(event_time)
    n = table.num_rows
    a, b = int(n * split.train), int(n * (split.train + split.valid))
    return table.slice(0, a), table.slice(a, b - a), table.slice(b)


def holdout(settings: Settings) -> pa.Table:
    """The latest window of the current clean snapshot: what models are compared on."""
    from mlinfra_ray.features.stage import training_table  # + feature views when features.use_views

    contract = settings.contract
    return time_split(training_table(settings), contract.event_time, settings.data.split)[2]


def prepare(settings: Settings, table: pa.Table | None = None) -> TrainingData:
    """Split the clean snapshot (or `table`, contract-typed rows), fit features on the train
    window, materialize Ray Datasets."""
    from mlinfra_ray.features.stage import training_table  # + feature views when features.use_views

    contract, label = settings.contract, settings.contract.label
    if table is None:
        table = training_table(settings)
    train_t, valid_t, test_t = time_split(table, contract.event_time, settings.data.split)
    log.info("train/valid/test rows: %d / %d / %d", train_t.num_rows, valid_t.num_rows, test_t.num_rows)
    state = fit_feature_state(train_t, settings.features, contract.event_time)
    fit_rows, pos_weight = balance(train_t, label, settings.trainer, settings.seed)
    datasets = {"train": featurize(fit_rows, state, label), "valid": featurize(valid_t, state, label)}
    return TrainingData(train_t, valid_t, test_t, state, pos_weight, datasets)


def balance(table: pa.Table, label: str, trainer: TrainerSettings, seed: int) -> tuple[pa.Table, float]:
    """Class-imbalance handling from config: the rows to train on and the positive-class weight.

    pos_weight: all rows, positives weighted negatives/positives (or `trainer.pos_weight`).
    oversample: positives drawn with replacement until they are `oversample_to` of the rows.
    none: all rows, unweighted.
    """
    y = table.column(label).to_numpy()
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if trainer.imbalance == "pos_weight":
        return table, float(trainer.pos_weight or neg / max(pos, 1))
    if trainer.imbalance == "none" or pos == 0:
        return table, 1.0
    return oversample(table, y, trainer.oversample_to, seed), 1.0


def oversample(table: pa.Table, y: np.ndarray, target: float, seed: int) -> pa.Table:
    """Add resampled positives until they make up `target` of the rows, then shuffle (seeded)."""
    rng = np.random.default_rng(seed)
    pos_idx = np.flatnonzero(y == 1)
    n_pos, n = len(pos_idx), len(y)
    extra = max(int(np.ceil((target * n - n_pos) / (1 - target))), 0) if target < 1 else 0
    idx = np.concatenate([np.arange(n), rng.choice(pos_idx, size=extra, replace=True)])
    rng.shuffle(idx)
    log.info("oversampled positives: %d -> %d of %d rows", n_pos, n_pos + extra, n + extra)
    return table.take(pa.array(idx))


def featurize(table: pa.Table, state: dict[str, Any], label: str) -> Any:
    """A materialized Ray Dataset of {"x": float32 [F], "y": float32} rows.

    Materializing before the trainer starts means Ray Data never competes with the train workers
    for CPUs (the other half of the 2-CPU deadlock fix, see mlinfra_ray.cluster).
    """
    import ray

    ds = ray.data.from_arrow(table)
    return ds.map_batches(_featurize_batch, batch_format="pyarrow",
                          fn_kwargs={"state": state, "label": label}).materialize()


def _featurize_batch(batch: pa.Table, state: dict[str, Any], label: str) -> dict[str, np.ndarray]:
    return {"x": transform(state, batch),
            "y": batch.column(label).to_numpy(zero_copy_only=False).astype(np.float32)}
