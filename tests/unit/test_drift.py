"""Drift detection on the synthetic fraud data, and the window bookkeeping the monitor runs."""

from __future__ import annotations

import dataclasses
import os

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


# --- the full window suite: per-feature + MMD + score tests, rebuilt from a bundle -------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A bundle fitted on 2000 clean rows, its held-out clean rows and shifted rows (same users)."""
    import torch

    from mlinfra_ray.bundle import load_bundle
    from mlinfra_ray.datasets.bundles import synthetic_bundle

    s = compose_settings([])
    syn = dataclasses.replace(s.data.synthetic, rows=3000, seed=11)
    clean = generate_transactions(syn, drift="none")
    bundle = load_bundle(synthetic_bundle(tmp_path_factory.mktemp("b") / "v1", s, train=clean.slice(0, 2000)))
    torch.manual_seed(0)  # MMD permutations and online bootstraps: deterministic test outcomes
    return s, bundle, clean.slice(2000), generate_transactions(syn, drift="shift").slice(0, 500)


def window_of(bundle, table):
    from mlinfra_ray.features.transforms import drift_matrix

    return drift_matrix(bundle.feature_state, table), bundle.predict(table)


def test_suite_splits_the_level_across_tests_and_passes_clean_windows(served):
    from mlinfra_ray.drift import suite_from_bundle

    s, bundle, clean, _ = served
    suite = suite_from_bundle(bundle, dataclasses.replace(s.drift, score_test=True))
    assert suite.alpha == pytest.approx(s.drift.p_val / 3)  # features, MMD, score
    report = suite.check(*window_of(bundle, clean.slice(0, 500)))
    assert set(report["tests"]) == {"features", "mmd", "score"}
    assert report["is_drift"] is False, report["tests"]
    assert report["threshold"] == pytest.approx(suite.alpha / len(suite.names))


def test_suite_flags_shifted_windows_and_names_the_test(served):
    from mlinfra_ray.drift import suite_from_bundle

    s, bundle, _, shifted = served
    report = suite_from_bundle(bundle, s.drift).check(*window_of(bundle, shifted))
    assert report["is_drift"] is True
    assert report["tests"]["features"]["is_drift"] and report["tests"]["mmd"]["is_drift"]
    assert report["p_vals"]["amount"] < report["threshold"]


def test_mmd_runs_at_most_once_per_interval_and_the_skip_is_reported(served):
    from mlinfra_ray.drift import suite_from_bundle

    s, bundle, _, shifted = served
    rows, scores = window_of(bundle, shifted)
    hourly = dataclasses.replace(s.drift, mmd=dataclasses.replace(s.drift.mmd, min_interval_s=3600))
    suite = suite_from_bundle(bundle, hourly)
    first, second = suite.check(rows, scores), suite.check(rows, scores)
    assert "mmd" in first["tests"] and first["skipped"] == []
    assert "mmd" not in second["tests"] and second["skipped"] == ["mmd"]
    assert second["is_drift"] is True  # the per-feature tests still run on every window
    assert second["alpha"] == first["alpha"]  # the level stays split over every enabled test
    every = suite_from_bundle(bundle, dataclasses.replace(s.drift, mmd=dataclasses.replace(
        s.drift.mmd, min_interval_s=0)))
    assert all("mmd" in every.check(rows, scores)["tests"] for _ in range(2))


def test_score_test_flags_a_shift_in_scores_alone(served):
    from mlinfra_ray.drift import suite_from_bundle

    s, bundle, clean, _ = served
    rows, scores = window_of(bundle, clean.slice(0, 500))
    policy = dataclasses.replace(s.drift, score_test=True)
    report = suite_from_bundle(bundle, policy).check(rows, np.clip(scores + 0.1, 0, 1))
    assert report["is_drift"] is True
    assert report["tests"]["score"]["is_drift"] and not report["tests"]["features"]["is_drift"]


def test_tests_can_be_switched_off_and_fdr_chosen(served):
    from mlinfra_ray.drift import DriftSuite

    s, bundle, clean, _ = served
    names = bundle.parts["drift"]["columns"]
    cats = {int(k): v for k, v in bundle.parts["drift"]["categories"].items()}
    policy = dataclasses.replace(s.drift, correction="fdr", mmd=dataclasses.replace(s.drift.mmd, enabled=False))
    suite = DriftSuite(bundle.drift_reference(), names, cats, policy, reference_scores=None)
    assert suite.alpha == pytest.approx(s.drift.p_val) and suite.mmd is None and suite.scores is None
    report = suite.check(*window_of(bundle, clean.slice(0, 300)))
    assert set(report["tests"]) == {"features"}


def test_online_detector_alarms_on_shifted_records_only(served):
    import torch

    from mlinfra_ray.drift import suite_from_bundle

    s, bundle, clean, shifted = served
    torch.manual_seed(0)
    # ERT 500 records: ~8% chance of a false alarm within these 40 clean ones (seeded: stable)
    online = dataclasses.replace(s.drift.online, enabled=True, ert=500, window_size=20, n_bootstraps=1000,
                                 reference_size=100)
    policy = dataclasses.replace(s.drift, online=online, mmd=dataclasses.replace(s.drift.mmd, enabled=False))
    suite = suite_from_bundle(bundle, policy)
    quiet = suite.online.update(window_of(bundle, clean.slice(0, 40))[0])
    assert quiet["alarms"] == 0 and quiet["test_stat"] < quiet["threshold"] and quiet["time"] == 40
    loud = suite.online.update(window_of(bundle, shifted.slice(0, 100))[0])
    assert loud["alarms"] >= 1


def test_reference_part_is_a_seeded_sample_with_model_scores(served):
    from mlinfra_ray.drift import reference_part
    from mlinfra_ray.features.transforms import drift_matrix

    s, bundle, clean, _ = served
    part, sample = reference_part(bundle.feature_state, clean, dataclasses.replace(s.drift, reference_size=100),
                                  seed=3, model=bundle.model)
    again, _ = reference_part(bundle.feature_state, clean, dataclasses.replace(s.drift, reference_size=100),
                              seed=3, model=bundle.model)
    assert sample.shape == (100, len(part["columns"])) and part == again
    rows = [i for i in range(clean.num_rows) if (drift_matrix(bundle.feature_state, clean.slice(i, 1)) ==
                                                  sample[0]).all()]
    assert rows, "the sample's rows come from the table"
    first_score = float(bundle.predict(clean.slice(rows[0], 1))[0])
    assert part["reference_scores"][0] == pytest.approx(first_score, abs=1e-6)


def test_drift_window_buffer_can_be_discarded():
    window = DriftWindow(window_size=4)
    window.add(np.ones((3, 2)))
    assert window.clear_buffer() == 3 and window.state()["buffered"] == 0 and window.rows_seen == 3
    assert window.add(np.ones((4, 2)))[0].shape == (4, 2)


def test_monitor_priority_is_lowered_on_every_thread_not_just_the_caller():
    """Linux nice values are per thread; the monitor must yield on the threads Serve already runs
    (checked in a child process: the test runner keeps its own priority)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os, threading, time
        from mlinfra_ray.serve.monitor import lower_priority
        stop = threading.Event()
        early = threading.Thread(target=stop.wait)  # exists before, like Serve's threads
        early.start()
        lower_priority(7)
        later = threading.Thread(target=stop.wait)
        later.start()
        nice = {t: int(open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()[16])
                for t in os.listdir("/proc/self/task")}
        stop.set()
        print(sorted(set(nice.values())), len(nice))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    values, threads = out.stdout.split("]")[0] + "]", int(out.stdout.split()[-1])
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert values == f"[{min(19, base + 7)}]" and threads >= 3
