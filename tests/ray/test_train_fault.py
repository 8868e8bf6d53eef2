"""Fault injection on real TorchTrainer runs (2 DDP workers on the session cluster).

A worker raising mid-training must cost one restart, not the run: with max_failures=1 the new
worker group resumes from the last checkpoint and the history keeps exactly one row per epoch.
With max_failures=0 the run fails cleanly, its last good checkpoint stays loadable, and an explicit
resubmission (same run name, trainer.resume=true) continues from it; a new name starts fresh.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from mlinfra_ray.cluster import plan_training
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.train.loop import META, OPTIMIZER, WEIGHTS
from mlinfra_ray.train.trainer import ResumeError, TrainingFailed, fit

pytestmark = [pytest.mark.ray, pytest.mark.slow]
EPOCHS, FEATURES = 4, 6


@pytest.fixture(scope="module")
def datasets(ray_cluster):
    import ray

    rng = np.random.default_rng(0)

    def rows(n: int) -> object:
        x = rng.standard_normal((n, FEATURES)).astype(np.float32)
        y = (x[:, 0] + 0.5 * x[:, 1] > 1.0).astype(np.float32)
        return ray.data.from_arrow(pa.table({"i": np.arange(n)})).map_batches(
            lambda b: {"x": x[b.column("i").to_numpy()], "y": y[b.column("i").to_numpy()]},
            batch_format="pyarrow").materialize()

    return {"train": rows(2048), "valid": rows(512)}


def settings(root: Path, *overrides: str):
    return compose_settings([f"paths.root={root}", f"trainer.max_epochs={EPOCHS}", "trainer.patience=100",
                             "trainer.batch_size=128", "model.hidden=[16]", "scaling.num_workers=2",
                             *overrides])


def train(s, datasets, cluster):
    return fit(datasets, FEATURES, 3.0, s, plan_training(s.scaling, s.ray, cluster))


def checkpoint_dirs(root: Path, name: str) -> list[Path]:
    dirs = [p for p in (root / "ray_results" / name).glob("checkpoint_*") if p.is_dir()]
    return sorted(dirs, key=lambda p: json.loads((p / META).read_text())["epoch"])


def checkpoints(root: Path, name: str) -> list[dict]:
    return [json.loads((p / META).read_text()) for p in checkpoint_dirs(root, name)]


def test_worker_crash_resumes_at_the_next_epoch(tmp_path, datasets, ray_cluster):
    s = settings(tmp_path, "trainer.fail_at_epoch=2", "trainer.max_failures=1")
    out = train(s, datasets, ray_cluster)
    assert [h["epoch"] for h in out.history] == list(range(EPOCHS))  # one row per epoch, none repeated
    final = checkpoints(tmp_path, out.run_name)[-1]
    assert final["epoch"] == EPOCHS - 1
    assert final["state"]["restarts"] == 1  # the injected crash happened and was survived once
    # A new worker group re-streams its shard at epoch 2 (the old processes and caches are gone).
    assert [h["streamed"] for h in out.history] == [1.0, 0.0, 1.0, 0.0]
    assert out.history[-1]["valid_loss"] < out.history[0]["valid_loss"]  # training went on, not over
    best = min(out.history, key=lambda h: h["valid_loss"])["epoch"]
    kept = [m["epoch"] for m in checkpoints(tmp_path, out.run_name)]
    assert len(kept) <= s.trainer.keep_checkpoints + 1 and best in kept  # best-k (+ the latest)
    assert out.best["epoch"] == best  # the weights returned are the best epoch's, not the last


def test_no_retries_fails_cleanly_keeps_the_checkpoint_and_resubmission_continues(tmp_path, datasets,
                                                                                     ray_cluster):
    name = "resubmitted-run"
    crashing = settings(tmp_path, "trainer.fail_at_epoch=2", "trainer.max_failures=0",
                        f"trainer.run_name={name}")
    with pytest.raises(TrainingFailed, match="trainer.resume=true"):
        train(crashing, datasets, ray_cluster)
    kept = checkpoints(tmp_path, name)
    assert [m["epoch"] for m in kept] == [0, 1]  # the last good checkpoint is epoch 1, intact:
    latest = checkpoint_dirs(tmp_path, name)[-1]
    assert load_file(latest / WEIGHTS) and torch.load(latest / OPTIMIZER, weights_only=True)["state"]

    again = settings(tmp_path, f"trainer.run_name={name}")
    with pytest.raises(ResumeError):  # the same name without an explicit resume is refused
        train(again, datasets, ray_cluster)
    out = train(settings(tmp_path, f"trainer.run_name={name}", "trainer.resume=true"), datasets, ray_cluster)
    assert [h["epoch"] for h in out.history] == list(range(EPOCHS))
    assert out.history[:2] == kept[-1]["state"]["history"]  # epochs 0-1 were not re-run
    assert checkpoints(tmp_path, name)[-1]["state"]["restarts"] == 1

    fresh = train(settings(tmp_path, "trainer.max_epochs=1"), datasets, ray_cluster)
    assert fresh.run_name != name and [h["epoch"] for h in fresh.history] == [0]
    assert checkpoints(tmp_path, fresh.run_name)[-1]["state"]["restarts"] == 0
