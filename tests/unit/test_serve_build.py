"""`build_app`: one function from config to the bound app — replicas or autoscaling, bounded
queues, drift on/off, online-lookup kind — checked without starting Ray."""

from __future__ import annotations

import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.serve.app import build_app
from mlinfra_ray.settings import to_dict


def deployments(*overrides: str) -> dict:
    app = build_app(to_dict(compose_settings(["serve.bundle_path=/nonexistent/bundle", *overrides])))
    ingress = app._bound_deployment
    predictor, monitor, _ = ingress.init_args
    found = {"Ingress": ingress}
    if predictor is not None:
        found["Predictor"] = predictor._bound_deployment
    if monitor is not None:
        found["DriftMonitor"] = monitor._bound_deployment
    return found


def test_default_app_has_bounded_queues_fixed_replicas_and_a_monitor():
    d = deployments("serve.max_queued_requests=7", "serve.max_ongoing_requests=5", "serve.predictor_replicas=3")
    assert set(d) == {"Ingress", "Predictor", "DriftMonitor"}
    ingress, predictor = d["Ingress"]._deployment_config, d["Predictor"]._deployment_config
    assert ingress.max_queued_requests == predictor.max_queued_requests == 7
    assert ingress.max_ongoing_requests == 5
    assert predictor.max_ongoing_requests == 64  # a full batch (max_batch_size) always fits
    assert d["Predictor"].num_replicas == 3 and predictor.autoscaling_config is None
    assert predictor.user_config == {"alias_poll_s": 10.0, "version": None}
    # the predictor hands scored rows to the monitor itself; 3 replicas x 64 hand-offs may be in flight
    assert d["Predictor"].init_args[3]._bound_deployment is d["DriftMonitor"]
    assert d["DriftMonitor"]._deployment_config.max_ongoing_requests == 3 * 64 + 8


def test_autoscaling_preset_replaces_fixed_replicas():
    cfg = deployments("serve=autoscale")["Predictor"]._deployment_config.autoscaling_config
    assert (cfg.min_replicas, cfg.max_replicas, cfg.target_ongoing_requests) == (1, 4, 8.0)


def test_drift_disabled_means_no_monitor_deployment():
    d = deployments("drift.enabled=false")
    assert set(d) == {"Ingress", "Predictor"} and d["Predictor"].init_args[3] is None


def test_unknown_online_store_fails_at_build_time():
    with pytest.raises(ValueError, match="serve.online_store='nosql'"):
        deployments("serve.online_store=nosql")


def test_drift_sample_fraction_reaches_the_predictor_and_is_range_checked():
    predictor = deployments("drift.sample_fraction=0.25")["Predictor"]
    assert predictor.init_args[1]["drift_sample"] == 0.25
    with pytest.raises(ValueError, match=r"drift.sample_fraction=1.5: must be in \(0, 1\]"):
        deployments("drift.sample_fraction=1.5")


def test_drift_rate_cap_reaches_the_predictor_and_is_checked():
    assert deployments()["Predictor"].init_args[1]["drift_max_rows_per_s"] == 500.0
    assert deployments("drift.max_rows_per_s=null")["Predictor"].init_args[1]["drift_max_rows_per_s"] is None
    with pytest.raises(ValueError, match=r"drift.max_rows_per_s=0(\.0)?: must be > 0"):
        deployments("drift.max_rows_per_s=0")


def test_colocated_predictor_is_built_inside_the_ingress():
    d = deployments("serve.colocate_predictor=true")
    assert set(d) == {"Ingress", "DriftMonitor"}
    source, config, loader = d["Ingress"].init_args[2]["colocated"]
    assert source["bundle_path"] == "/nonexistent/bundle" and config["max_batch_size"] == 64
    assert callable(loader)
