"""Drift detection on the synthetic fraud data, and the window bookkeeping the monitor runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.drift import DriftWindow, build_detector, check_window
from mlinfra_ray.features.transforms import drift_columns, drift_matrix, fit_feature_state


@pytest.fixture(scope="module")
def setup():
    """Reference and held-out clean rows from one population; shifted rows from the same users."""
    s = compose_settings([])
    syn = dataclasses.replace(s.data.synthetic, rows=4000, seed=11)
    clean = generate_transactions(syn, drift="none")
    state = fit_feature_state(clean, s.features, s.contract.event_time)
    names, cats = drift_columns(state)
    rows = drift_matrix(state, clean)[np.random.default_rng(0).permutation(clean.num_rows)]
    shifted = drift_matrix(state, generate_transactions(syn, drift="shift"))
    detector = build_detector(rows[:2000], cats, p_val=0.05)
    return detector, names, rows[2000:], shifted


def test_clean_window_is_not_flagged(setup):
    detector, names, held_out, _ = setup
    report = check_window(detector, held_out[:300], names)
    assert report["is_drift"] is False and report["n"] == 300
    assert set(report["p_vals"]) == set(names) == set(report["distances"])
    assert report["threshold"] == pytest.approx(0.05 / len(names))  # Bonferroni over features


def test_shifted_window_is_flagged_on_the_shifted_columns(setup):
    detector, names, _, shifted = setup
    report = check_window(detector, shifted[:300], names)
    assert report["is_drift"] is True
    assert report["p_vals"]["amount"] < report["threshold"]  # amounts x2.5 in the shift scenario
    assert report["p_vals"]["device_age_days"] > report["threshold"]  # untouched by the shift


def test_window_shape_is_checked(setup):
    detector, names, held_out, _ = setup
    with pytest.raises(ValueError, match="drift columns"):
        check_window(detector, held_out[:50, :3], names)


def test_reference_must_hold_category_indices():
    ref = np.array([[0.5, 0.0], [1.5, 5.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="column 1"):
        build_detector(ref, {1: 3}, 0.05)


def test_drift_window_fills_tumbling_windows():
    window = DriftWindow(window_size=4)
    assert window.add(np.ones((3, 2))) == []
    (first,) = window.add(np.arange(6, dtype=np.float32).reshape(3, 2))  # 6 rows: one full window
    assert first.shape == (4, 2) and first[3].tolist() == [0.0, 1.0]
    assert window.state()["buffered"] == 2
    full = window.add(np.zeros((7, 2)))  # 9 buffered: two windows, one row left
    assert [w.shape for w in full] == [(4, 2), (4, 2)]
    assert full[0][:2].tolist() == [[2.0, 3.0], [4.0, 5.0]]  # order kept across chunks
    assert window.state()["buffered"] == 1 and window.rows_seen == 13


def test_drift_window_keeps_latest_report_and_counts():
    window = DriftWindow(window_size=2)
    assert window.state()["latest"] is None
    window.record({"is_drift": False, "n": 2})
    window.record({"is_drift": True, "n": 2})
    state = window.state()
    assert state["latest"] == {"is_drift": True, "n": 2}
    assert (state["windows_checked"], state["windows_drifted"]) == (2, 1)
    with pytest.raises(ValueError):
        window.add(np.ones(3))
