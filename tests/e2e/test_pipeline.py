"""The demo flow as users run it: `python jobs/*.py` in subprocesses, on a 2-CPU Ray cluster.

One small pipeline run (debug=fast) is shared by the assertions below; it is also the proof that
the default resource plan completes with `ray.init(num_cpus=2)` (2 DDP workers + Ray Data + Serve).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from mlinfra_ray.bundle import load_bundle
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.registry import alias_version, resolve_alias
from tests.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run_job(script: str, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, f"jobs/{script}", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("mlinfra")


@pytest.fixture(scope="module")
def summary(root):
    proc = run_job("pipeline.py", "debug=fast", "ray.num_cpus=2", f"paths.root={root}",
                   f"serve.port={free_port()}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "mlinfra_ray pipeline summary" in proc.stdout
    return json.loads((root / "summary.json").read_text())


def test_every_raw_row_is_accounted_for(summary, root):
    ing = summary["ingest"]
    assert ing["rows_in"] == summary["generated"]["rows_written"]
    assert ing["rows_in"] == ing["clean"] + ing["quarantined"] + ing["duplicates_removed"]
    assert pq.read_table(root / "lake" / "quarantine.parquet").num_rows == ing["quarantined"] > 0
    clean = pads.dataset(root / "lake" / "clean", partitioning="hive").count_rows()
    assert clean == ing["clean"] and ing["duplicates_removed"] > 0


def test_model_beats_the_positive_rate_baseline(summary):
    test = summary["train"]["test"]
    assert test["auc_pr"] >= 3 * test["positive_rate"]
    assert test["auc_pr"] - test["positive_rate"] >= 0.1
    assert test["auc_roc"] >= 0.8


def test_registry_alias_points_at_a_verified_bundle_with_lineage(summary, root):
    settings = compose_settings([f"paths.root={root}"])
    path, info = resolve_alias(settings.tracking, "champion")
    bundle = load_bundle(path)  # verifies the sha256 manifest
    assert info["version"] == summary["train"]["registry"]["version"]
    assert info["tags"]["data_snapshot"] == summary["ingest"]["snapshot_id"]
    assert len(info["tags"]["config_hash"]) == 16 and info["tags"]["git_sha"]
    assert bundle.parts["lineage"]["data_snapshot"] == summary["ingest"]["snapshot_id"]


def test_served_predictions_equal_offline(summary):
    serve = summary["serve"]
    assert serve["served_matches_offline"] and serve["max_abs_diff"] <= 1e-6


def test_drift_flagged_on_drifted_traffic_only(summary):
    serve = summary["serve"]
    assert serve["clean_windows"] >= 1 and serve["clean_drift"] is False
    assert serve["shifted_windows"] >= 1 and serve["shifted_drift"] is True
    assert "amount" in serve["top_drifted"] or "distance_from_home_km" in serve["top_drifted"]


def test_metrics_count_every_request(summary):
    assert summary["serve"]["metrics_requests_total"] == summary["serve"]["requests_sent"] > 0


def test_train_job_with_overrides_registers_a_new_version(summary, root):
    proc = run_job("train.py", "debug=fast", "ray.num_cpus=2", f"paths.root={root}",
                   "trainer.max_epochs=2", "scaling.num_workers=1")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "epoch 2/2" in proc.stdout + proc.stderr and "epoch 3/" not in proc.stdout + proc.stderr
    version = int(summary["train"]["registry"]["version"]) + 1
    # Registered as the challenger; it becomes champion only if it wins the promotion gate.
    assert f"v{version} as '" in proc.stdout
    assert alias_version(compose_settings([f"paths.root={root}"]).tracking, "challenger") == str(version)


def test_error_budget_fails_the_ingest_job(summary, root):
    proc = run_job("ingest.py", "debug=fast", "ray.num_cpus=2", f"paths.root={root}",
                   "contract.max_quarantine_fraction=0.001")
    assert proc.returncode != 0
    assert "over the error budget" in proc.stderr and "missing:amount" in proc.stderr


def test_cfg_job_prints_config_without_starting_ray():
    proc = run_job("pipeline.py", "--cfg", "job", "trainer.max_epochs=2", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "max_epochs: 2" in proc.stdout and "num_workers: 2" in proc.stdout
    assert "Ray" not in proc.stderr


@pytest.mark.extended  # ~100 s more; CI serves a views model over HTTP in tests/ray/test_feature_store.py
def test_pipeline_with_the_feature_store_serves_online_features(tmp_path):
    """`features=fraud_store`: views → offline store → online store → a model on them, served with
    the online lookups (serve.online_store=auto) and equal to the offline point-in-time answer."""
    proc = run_job("pipeline.py", "features=fraud_store", "debug=fast", "ray.num_cpus=2",
                   f"paths.root={tmp_path}", f"serve.port={free_port()}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    serve = json.loads((tmp_path / "summary.json").read_text())["serve"]
    assert serve["served_matches_offline"] and serve["max_abs_diff"] <= 1e-6
    lookups = serve["online_lookups"]
    assert set(lookups) == {"user_amount", "merchant_amount"}
    for view, counts in lookups.items():  # the clean phase: known entities, live event times
        assert counts.get("miss", 0) == 0 and counts.get("invalid", 0) == 0, (view, counts)
        assert counts.get("hit", 0) > 0.9 * sum(counts.values()), (view, counts)
    assert serve["shifted_drift"] is True
