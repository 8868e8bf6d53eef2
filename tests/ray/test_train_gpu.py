"""GPU training path (skipped without CUDA): one GPU worker, bf16 autocast, shard cached on the
device. Run on a GPU machine: .venv/bin/pytest -m gpu tests/ray/test_train_gpu.py"""

import numpy as np
import pyarrow as pa
import pytest
import torch

from mlinfra_ray.cluster import plan_training
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.train.trainer import fit

pytestmark = [pytest.mark.ray, pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_one_gpu_worker_trains_with_bf16(tmp_path, ray_cluster):
    import ray

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8192, 16)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0.5).astype(np.float32)
    ds = ray.data.from_arrow(pa.table({"i": np.arange(len(y))})).map_batches(
        lambda b: {"x": x[b.column("i").to_numpy()], "y": y[b.column("i").to_numpy()]},
        batch_format="pyarrow").materialize()
    s = compose_settings([f"paths.root={tmp_path}", "scaling=gpu_1x", "trainer.max_epochs=3",
                          "trainer.batch_size=1024", "trainer.precision=auto", "trainer.patience=10"])
    plan = plan_training(s.scaling, s.ray, ray_cluster)
    assert plan.gpus_per_worker == 1.0
    out = fit({"train": ds, "valid": ds}, 16, 1.0, s, plan)
    assert [h["epoch"] for h in out.history] == [0, 1, 2]
    assert out.history[0]["streamed"] == 1.0 and out.history[-1]["streamed"] == 0.0  # cached on device
    assert out.history[-1]["valid_loss"] < out.history[0]["valid_loss"]
    assert out.history[-1]["valid_auc_pr"] > 0.8
