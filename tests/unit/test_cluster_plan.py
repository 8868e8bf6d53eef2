"""Resource planning: training never takes the CPUs Ray Data needs (the 2-CPU deadlock)."""

import pytest

from mlinfra_ray.cluster import ResourceError, plan_training
from mlinfra_ray.settings import RaySettings, ScalingSettings

RAY = RaySettings()


def test_two_workers_on_two_cpus_leave_data_a_cpu():
    plan = plan_training(ScalingSettings(num_workers=2), RAY, {"CPU": 2.0})
    assert plan.cpus_per_worker == 0.5 and plan.data_cpus == 1.0


def test_big_machine_gets_whole_cpus():
    plan = plan_training(ScalingSettings(num_workers=4), RAY, {"CPU": 16.0})
    assert plan.resources_per_worker() == {"CPU": 1.0}


def test_explicit_cpus_that_starve_data_are_rejected_with_advice():
    with pytest.raises(ResourceError, match="scaling.num_workers"):
        plan_training(ScalingSettings(num_workers=2, cpus_per_worker=1.0), RAY, {"CPU": 2.0})


def test_gpu_request_needs_gpus():
    with pytest.raises(ResourceError, match="GPU"):
        plan_training(ScalingSettings(num_workers=2, use_gpu=True, cpus_per_worker=1), RAY, {"CPU": 8.0})
    plan = plan_training(ScalingSettings(num_workers=2, use_gpu=True, cpus_per_worker=1), RAY,
                         {"CPU": 8.0, "GPU": 2.0})
    assert plan.resources_per_worker() == {"CPU": 1.0, "GPU": 1.0}


def test_one_cpu_cluster_is_refused():
    with pytest.raises(ResourceError, match="nothing for training"):
        plan_training(ScalingSettings(num_workers=1), RAY, {"CPU": 1.0})
