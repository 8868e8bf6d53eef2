"""A real Ray Tune sweep whose trials are TorchTrainer runs: one trial crashes (injected), the
other finishes, the failure is reported, and the best trial goes through bundle → registry → gate."""

import dataclasses

import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.registry import alias_version
from mlinfra_ray.settings import ParamSpec
from mlinfra_ray.tune import describe, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.extended]


def test_failed_trial_does_not_fail_the_sweep(tmp_path, ray_cluster):
    base = compose_settings([
        f"paths.root={tmp_path}", "data.synthetic.rows=4000", "data.synthetic.n_users=200",
        "trainer.max_epochs=2", "trainer.max_failures=0", "scaling.num_workers=1",
        "tune.searcher=random", "tune.scheduler=fifo", "tune.num_samples=1", "tune.max_concurrent=2"])
    space = {"trainer.fail_at_epoch": ParamSpec("grid", values=[None, 1]),
             "trainer.lr": ParamSpec("loguniform", 1e-3, 1e-2)}
    settings = dataclasses.replace(base, tune=dataclasses.replace(base.tune, space=space))
    table = generate_transactions(settings.data.synthetic)  # contract-typed rows, as ingest writes them

    result = run_sweep(settings, ray_cluster, "snapshot-under-test", table)

    assert len(result.trials) == 2 and len(result.failed) == 1
    failed, ok = result.failed[0], next(t for t in result.trials if t["status"] == "TERMINATED")
    assert failed["params"]["trainer.fail_at_epoch"] == 1 and "injected failure" in failed["error"]
    assert ok["params"]["trainer.fail_at_epoch"] is None and ok["epochs"] == 2
    assert result.best_trial == ok["trial_id"]
    stage = result.stage
    assert stage.run_name == f"{result.name}-{ok['trial_id']}"
    assert [h["epoch"] for h in stage.history] == [0, 1]
    assert stage.registry["version"] == alias_version(settings.tracking, "challenger")
    assert stage.gate is not None and stage.gate["challenger_version"] == stage.registry["version"]
    assert stage.metrics["rows"] > 0 and "channel:web" in stage.slices
    assert "1 failed" in describe(result)
