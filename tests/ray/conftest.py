"""One local Ray cluster for the whole `ray` test tier (the shape verified on 2 cores)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    os.environ.pop("RAY_ADDRESS", None)  # never attach to someone else's cluster by accident
    # 4 logical CPUs on 2 cores: Train/Tune tests need slack for Ray Data (see RAY_NOTES.md).
    ray.init(num_cpus=4, include_dashboard=True,
             runtime_env={"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}})
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
