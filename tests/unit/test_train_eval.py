"""Evaluation metrics, calibration folding and class-imbalance handling (no Ray)."""

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
import torch

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.evaluate import (
    calibration_error,
    classification_metrics,
    overfit_gap,
    slice_keys,
    slice_metrics,
)
from mlinfra_ray.models import build_model
from mlinfra_ray.settings import EvalSettings, SliceSpec
from mlinfra_ray.train.calibrate import calibrate, logits_of
from mlinfra_ray.train.data import balance, time_split

S = compose_settings([])


def test_calibration_error_is_zero_when_scores_match_rates_and_large_when_shifted():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(int)
    assert calibration_error(p, y) < 0.01
    assert calibration_error(np.clip(p + 0.3, 0, 1), y) > 0.2


def test_metrics_at_threshold_by_hand():
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.1])
    labels = np.array([1, 0, 1, 0, 0])
    m = classification_metrics(scores, labels, threshold=0.5)
    assert m["precision_at_threshold"] == 0.5 and m["recall_at_threshold"] == 0.5
    assert m["positive_rate"] == pytest.approx(0.4)
    assert m["auc_roc"] == pytest.approx(5 / 6)
    assert m["brier"] == pytest.approx(np.mean((scores - labels) ** 2))


def test_slices_name_buckets_and_categories():
    t = pa.table({"channel": ["web", None, "pos", "web"], "amount": [5.0, 20.0, 600.0, None]})
    assert list(slice_keys(t, SliceSpec("channel"))) == ["channel:web", "channel:missing", "channel:pos",
                                                        "channel:web"]
    assert list(slice_keys(t, SliceSpec("amount", [0, 20, 500]))) == [
        "amount:0-20", "amount:20-500", "amount:500-inf", "amount:missing"]


def test_slice_metrics_cover_every_row_and_hide_aucs_of_tiny_slices():
    rng = np.random.default_rng(1)
    n = 400
    t = pa.table({"channel": rng.choice(["web", "pos", "app"], n).tolist(), "amount": rng.uniform(0, 50, n)})
    y = rng.integers(0, 2, n)
    scores = np.clip(y * 0.6 + rng.uniform(0, 0.4, n), 0, 1)
    ev = EvalSettings(slices=[SliceSpec("channel"), SliceSpec("amount", [10])], min_slice_rows=120)
    out = slice_metrics(t, scores, y, 0.5, ev)
    assert sum(m["rows"] for k, m in out.items() if k.startswith("channel:")) == n
    assert sum(m["rows"] for k, m in out.items() if k.startswith("amount:")) == n
    small = out["amount:-inf-10"]  # ~80 rows < 120: counts kept, AUCs hidden
    assert small["rows"] < 120 and np.isnan(small["auc_pr"])
    assert out["amount:10-inf"]["auc_pr"] > 0.9


def test_overfit_gap_signs():
    history = [{"epoch": 0, "train_loss": 0.5, "valid_loss": 0.4},
               {"epoch": 1, "train_loss": 0.2, "valid_loss": 0.6}]
    gap = overfit_gap({"auc_pr": 0.9, "auc_roc": 0.99}, {"auc_pr": 0.5, "auc_roc": 0.9}, history)
    assert gap["auc_pr_gap"] == pytest.approx(0.4) and gap["loss_gap"] == pytest.approx(0.4)
    assert gap["epochs_after_best_valid_loss"] == 1


def test_calibration_folds_into_the_last_layer_and_keeps_the_ranking():
    torch.manual_seed(0)
    x = torch.randn(6000, 4)
    true_logit = 2 * x[:, 0] - 3.0  # ~7 % positives
    y = (torch.rand(6000) < torch.sigmoid(true_logit)).numpy().astype(int)
    model = build_model({"name": "mlp", "hidden": [8], "dropout": 0.0}, 4)
    with torch.no_grad():  # a model whose logits are the truth + log(30): what pos_weight=30 learns
        first, last = model.net[0], model.net[-1]
        first.weight.zero_()
        first.bias.zero_()
        first.weight[0, 0], first.bias[0] = 1.0, 10.0  # hidden unit 0 = x0 + 10 (> 0, so ReLU passes it)
        last.weight.zero_()
        last.weight[0, 0] = 2.0
        last.bias.fill_(-3.0 - 20.0 + np.log(30))
    feats = x.numpy()
    before = torch.sigmoid(torch.from_numpy(logits_of(model, feats))).numpy()
    params = calibrate(model, feats, y)
    after = torch.sigmoid(torch.from_numpy(logits_of(model, feats))).numpy()
    assert calibration_error(before, y) > 0.1 > 0.02 > calibration_error(after, y)
    assert params["platt_a"] == pytest.approx(1.0, abs=0.15)
    assert params["platt_b"] == pytest.approx(-np.log(30), abs=0.4)
    assert (np.argsort(before, kind="stable") == np.argsort(after, kind="stable")).mean() > 0.99


def test_calibration_is_skipped_on_a_one_class_window():
    model = build_model({"name": "mlp", "hidden": [4], "dropout": 0.0}, 3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert calibrate(model, np.zeros((10, 3), np.float32), np.zeros(10, int)) == {}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("mode", ["pos_weight", "oversample", "none"])
def test_imbalance_modes(mode):
    y = np.array([1] * 30 + [0] * 970)
    table = pa.table({"is_fraud": y, "i": np.arange(1000)})
    trainer = dataclasses.replace(S.trainer, imbalance=mode, oversample_to=0.25)
    rows, pos_weight = balance(table, "is_fraud", trainer, seed=3)
    labels = rows.column("is_fraud").to_numpy()
    if mode == "pos_weight":
        assert rows.equals(table) and pos_weight == pytest.approx(970 / 30)
    elif mode == "none":
        assert rows.equals(table) and pos_weight == 1.0
    else:
        assert pos_weight == 1.0 and labels.mean() == pytest.approx(0.25, abs=0.002)
        assert set(rows.column("i").to_numpy()) == set(range(1000))  # every original row is kept
        again, _ = balance(table, "is_fraud", trainer, seed=3)
        assert again.equals(rows)  # seeded


def test_time_split_trains_on_the_past_and_tests_on_the_future():
    t = pa.table({"event_time": np.arange(100)[::-1], "v": np.arange(100)})
    train, valid, test = time_split(t, "event_time", S.data.split)
    assert train.num_rows + valid.num_rows + test.num_rows == 100
    assert max(train.column("event_time").to_pylist()) < min(valid.column("event_time").to_pylist())
    assert max(valid.column("event_time").to_pylist()) < min(test.column("event_time").to_pylist())
