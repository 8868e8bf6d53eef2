"""Training and sweep plumbing without a cluster: precision, best-k choice, the resume guard,
search spaces, dotted overrides and sweep resource planning."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from mlinfra_ray.cluster import ResourceError
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.models import build_model
from mlinfra_ray.settings import ParamSpec, SettingsError, to_dict
from mlinfra_ray.train.steps import autocast_dtype, evaluate_loss, train_epoch
from mlinfra_ray.train.trainer import RUN_MARKER, ResumeError, guard_run, pick_best
from mlinfra_ray.tune import (
    SweepInterrupted,
    apply_params,
    check_complete,
    check_sweep,
    plan_sweep,
    search_space,
    trial_settings,
)

S = compose_settings([])


@pytest.mark.parametrize(("precision", "device", "expected"), [
    ("auto", "cpu", None), ("auto", "cuda", torch.bfloat16), ("fp32", "cuda", None),
    ("bf16", "cpu", torch.bfloat16),
])
def test_precision(precision, device, expected):
    assert autocast_dtype(precision, torch.device(device)) is expected


def test_bf16_autocast_steps_learn_on_cpu():
    """The autocast path (bf16 forward, fp32 loss and master weights) trains; exercised on CPU."""
    torch.manual_seed(0)
    x = torch.randn(512, 6)
    y = (x[:, 0] - x[:, 2] > 0).float()
    model = build_model({"name": "mlp", "hidden": [16], "dropout": 0.0}, 6)
    opt = torch.optim.AdamW(model.parameters(), lr=0.02)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    batches = [{"x": x[i:i + 64], "y": y[i:i + 64]} for i in range(0, 512, 64)]
    before = evaluate_loss(model, loss_fn, batches, torch.bfloat16)
    for _ in range(8):
        train_epoch(model, opt, loss_fn, batches, 1.0, torch.bfloat16)
    after = evaluate_loss(model, loss_fn, batches, torch.bfloat16)
    assert after[0] / after[1] < 0.5 * before[0] / before[1]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_pick_best_by_monitor_and_mode_nan_never_wins():
    ckpts = [("a", {"epoch": 0, "valid_loss": 0.5, "valid_auc_pr": 0.2}),
             ("b", {"epoch": 1, "valid_loss": 0.4, "valid_auc_pr": float("nan")}),
             ("c", {"epoch": 2, "valid_loss": float("nan"), "valid_auc_pr": 0.3})]
    assert pick_best(ckpts, "valid_loss")[0] == "b"
    assert pick_best(ckpts, "valid_auc_pr")[0] == "c"


def test_existing_run_is_never_reused_by_accident(tmp_path):
    guard_run(str(tmp_path), "run-a", resume=False, fingerprint="f1")  # fresh: creates the marker
    assert json.loads((tmp_path / "run-a" / RUN_MARKER).read_text())["fingerprint"] == "f1"
    with pytest.raises(ResumeError, match="trainer.resume=true"):
        guard_run(str(tmp_path), "run-a", resume=False, fingerprint="f1")
    guard_run(str(tmp_path), "run-a", resume=True, fingerprint="f1")  # explicit resume: allowed
    with pytest.raises(ResumeError, match="another model"):
        guard_run(str(tmp_path), "run-a", resume=True, fingerprint="f2")
    guard_run(str(tmp_path), "run-b", resume=True, fingerprint="f2")  # resume of a new name: fresh


def test_search_space_types():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = search_space({"a": ParamSpec("loguniform", 1e-4, 1e-2), "b": ParamSpec("int", 2, 4),
                          "c": ParamSpec("choice", values=[1, 2]), "d": ParamSpec("grid", values=[None, 1]),
                          "e": ParamSpec("uniform", 0.0, 0.5)})
    assert isinstance(space["a"], Float) and isinstance(space["e"], Float)
    assert isinstance(space["b"], Integer) and (space["b"].lower, space["b"].upper) == (2, 5)
    assert isinstance(space["c"], Categorical) and space["d"] == {"grid_search": [None, 1]}
    with pytest.raises(SettingsError, match="tune.space.x"):
        search_space({"x": ParamSpec("uniform", 1.0, 0.0)})
    with pytest.raises(SettingsError, match="values"):
        search_space({"x": ParamSpec("choice")})


def test_dotted_params_reach_typed_trial_settings():
    s = trial_settings(to_dict(S), {"trainer.lr": 0.01, "model.hidden.0": 99}, "sweep-t1")
    assert s.trainer.lr == 0.01 and s.model.hidden[0] == 99 and s.model.hidden[1:] == S.model.hidden[1:]
    assert s.trainer.run_name == "sweep-t1" and s.trainer.resume and s.trainer.monitor == S.tune.metric
    with pytest.raises(SettingsError, match="trainer.lrr"):
        apply_params(to_dict(S), {"trainer.lrr": 1})


def test_sweep_metric_and_searcher_are_checked():
    check_sweep(S)
    with pytest.raises(SettingsError, match="tune.metric"):
        check_sweep(compose_settings(["tune.metric=valid_loss", "tune.mode=max"]))
    with pytest.raises(SettingsError, match="grid"):
        check_sweep(dataclasses.replace(S, tune=dataclasses.replace(
            S.tune, space={"trainer.seed": ParamSpec("grid", values=[1, 2])})))


def test_interrupted_sweep_is_caught_and_a_restored_finished_trial_counts():
    """Tune marks a cut-off trial TERMINATED without `done`; a trial finished before a restore may also
    come back without `done` (Tune sets it in memory after writing state) and must still count."""
    def result(trial_id, done):
        return SimpleNamespace(path=f"/sweeps/s/{trial_id}", error=None,
                               metrics={"epoch": 1, **({"done": True} if done else {})})

    two = dataclasses.replace(S, tune=dataclasses.replace(S.tune, num_samples=2))
    check_complete([result("a", True), result("b", True)], two, "s")
    with pytest.raises(SweepInterrupted, match="1 of 2 trials finished"):
        check_complete([result("a", True), result("b", False)], two, "s")
    check_complete([result("a", False), result("b", True)], two, "s", finished_before={"a"})
    with pytest.raises(SweepInterrupted):
        check_complete([result("a", False), result("b", True)], two, "s", finished_before={"b"})
    with pytest.raises(SweepInterrupted, match="1 of 2"):  # a trial Tune never created
        check_complete([result("a", True)], two, "s")


@pytest.mark.parametrize(("cpus", "overrides", "concurrent", "cpus_per_worker"), [
    (2, [], 1, 0.25),                               # 2 cores: one trial, driver 0.25 + 2 x 0.25
    (4, [], 1, 1.0),
    (4, ["tune.max_concurrent=2"], 2, 0.5),
    (16, ["scaling.num_workers=1"], 6, 1.0),       # capped by num_samples
])
def test_sweep_plan_fits_beside_ray_data(cpus, overrides, concurrent, cpus_per_worker):
    s = compose_settings(overrides)
    plan = plan_sweep(s, {"CPU": cpus})
    assert (plan.max_concurrent, plan.train.cpus_per_worker) == (concurrent, cpus_per_worker)
    used = plan.max_concurrent * (plan.driver_cpus + plan.train.num_workers * plan.train.cpus_per_worker)
    assert used <= cpus - s.ray.data_reserved_cpus


def test_sweep_plan_counts_gpus_and_refuses_what_cannot_fit():
    s = compose_settings(["scaling=gpu_1x"])
    assert plan_sweep(s, {"CPU": 16, "GPU": 2}).max_concurrent == 2
    with pytest.raises(ResourceError):
        plan_sweep(compose_settings(["tune.driver_cpus=1.0"]), {"CPU": 2})
