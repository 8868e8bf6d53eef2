"""The promotion gate and rollback against a real MLflow registry (embedded sqlite), with real
bundles of small models trained here on the synthetic fraud data (no Ray)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mlinfra_ray import registry
from mlinfra_ray.bundle import BundleError, save_bundle
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.features.transforms import drift_matrix, fit_feature_state, transform
from mlinfra_ray.models import build_model
from mlinfra_ray.promotion import PromotionError, promote, rollback
from mlinfra_ray.registry import RegistryError
from mlinfra_ray.train.calibrate import calibrate
from mlinfra_ray.train.data import time_split
from mlinfra_ray.train.steps import train_epoch

BASE = compose_settings(["data.synthetic.rows=20000"])
MODEL = {"name": "mlp", "hidden": [16], "dropout": 0.0}


@pytest.fixture(scope="module")
def data():
    table = generate_transactions(BASE.data.synthetic)
    train, valid, test = time_split(table, "event_time", BASE.data.split)
    state = fit_feature_state(train, BASE.features, "event_time")
    return {"train": train, "valid": valid, "test": test, "state": state}


def trained(data, epochs: int, shuffle_labels: bool = False, calibrated: bool = True,
            lr: float = 0.01) -> torch.nn.Module:
    torch.manual_seed(0)
    x = torch.from_numpy(transform(data["state"], data["train"]))
    y = torch.from_numpy(data["train"].column("is_fraud").to_numpy().astype(np.float32))
    if shuffle_labels:
        y = y[torch.randperm(len(y))]
    model = build_model(MODEL, x.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(30.0))
    batches = [{"x": x[i:i + 256], "y": y[i:i + 256]} for i in range(0, len(y), 256)]
    for _ in range(epochs):
        train_epoch(model, opt, loss_fn, batches, 1.0)
    if calibrated:
        calibrate(model, transform(data["state"], data["valid"]), data["valid"].column("is_fraud").to_numpy())
    return model.eval()


def register(settings, data, model: torch.nn.Module, name: str) -> str:
    parts = {"feature_state": data["state"], "contract": dataclasses.asdict(settings.contract), "model": MODEL,
             "config": {}, "lineage": {"run_name": name}, "metrics": {"threshold": 0.5}, "drift": {}}
    path = save_bundle(Path(settings.paths.bundles) / name, model.state_dict(), parts,
                       drift_matrix(data["state"], data["train"].slice(0, 100)))
    out = registry.register_bundle(path, settings.tracking, {"p": 1}, {"m": 1.0}, {"run_name": name},
                                   alias=settings.tracking.promotion.challenger_alias,
                                   history=[{"epoch": 0, "valid_loss": 0.5}, {"epoch": 1, "valid_loss": 0.4}])
    return out["version"]


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    return tmp_path_factory.mktemp("registry")  # one MLflow database: creating one takes seconds


@pytest.fixture
def settings(shared_root, request):
    """Each test gets its own registered model (and so its own aliases) in the shared store."""
    return compose_settings([f"paths.root={shared_root}", "tracking.promotion.min_improvement=0.01",
                             f"tracking.registered_model=m-{request.node.name}",
                             f"paths.bundles={shared_root}/bundles/{request.node.name}"])


def test_gate_promotes_only_winners_records_decisions_and_rolls_back(settings, data):
    import mlflow

    weak, strong, noise = trained(data, 1, lr=1e-3), trained(data, 2), trained(data, 3, shuffle_labels=True)
    v1 = register(settings, data, weak, "weak")
    first = promote(settings, data["test"])
    assert first.promoted and first.champion is None
    assert registry.alias_version(settings.tracking, "champion") == v1

    v2 = register(settings, data, noise, "noise")
    second = promote(settings, data["test"])
    assert not second.promoted and second.champion_version == v1
    assert second.challenger["auc_pr"] < second.champion["auc_pr"] + 0.01
    assert registry.alias_version(settings.tracking, "champion") == v1

    v3 = register(settings, data, strong, "strong")
    third = promote(settings, data["test"])
    assert third.champion["auc_pr"] + 0.01 <= third.challenger["auc_pr"], "precondition: strong beats weak"
    assert third.promoted and registry.alias_version(settings.tracking, "champion") == v3
    assert third.challenger["rows"] == third.champion["rows"] == data["test"].num_rows  # same holdout

    client = mlflow.MlflowClient(settings.tracking.uri)
    tags = {v: client.get_model_version(settings.tracking.registered_model, v).tags for v in (v1, v2, v3)}
    assert [tags[v]["gate.decision"] for v in (v1, v2, v3)] == ["promoted", "rejected", "promoted"]
    runs = client.search_runs([client.get_experiment_by_name("mlinfra").experiment_id],
                              "tags.`mlinfra.kind` = 'promotion_gate'")
    runs = [r for r in runs if r.data.tags["challenger_version"] in (v1, v2, v3)
            and r.info.run_id in {tags[v]["gate.run_id"] for v in (v1, v2, v3)}]
    assert len(runs) == 3
    gate_run = next(r for r in runs if r.data.tags["challenger_version"] == v2)
    assert gate_run.data.metrics["promoted"] == 0.0
    local = mlflow.artifacts.download_artifacts(run_id=gate_run.info.run_id, artifact_path="gate/decision.json")
    assert json.loads(Path(local).read_text())["reason"].startswith("auc_pr")

    assert rollback(settings) == (v3, v1)
    assert registry.alias_version(settings.tracking, "champion") == v1
    with pytest.raises(RegistryError):
        rollback(settings)  # v1 was the first champion: nothing earlier to go back to


def test_sanity_checks_reject_non_finite_and_uncalibrated_models(settings, data):
    strong = trained(data, 2)
    champ = register(settings, data, strong, "champ")
    assert promote(settings, data["test"]).promoted
    again = promote(settings, data["test"])  # the challenger alias still points at the champion
    assert not again.promoted and "already" in again.reason
    assert registry.alias_version(settings.tracking, "champion") == champ

    broken = trained(data, 2)
    with torch.no_grad():
        broken.net[0].weight[0, 0] = float("nan")
    register(settings, data, broken, "nan")
    d = promote(settings, data["test"])
    assert not d.promoted and not d.checks["finite_outputs"] and "finite_outputs" in d.reason

    register(settings, data, trained(data, 2, calibrated=False), "uncalibrated")
    d = promote(settings, data["test"])
    assert not d.promoted and not d.checks["calibration_error"]
    assert d.challenger["calibration_error"] > settings.tracking.promotion.max_calibration_error


def test_tampered_registered_bundle_is_refused(settings, data):
    import mlflow

    version = register(settings, data, trained(data, 2), "tampered")
    source = mlflow.MlflowClient(settings.tracking.uri).get_model_version(
        settings.tracking.registered_model, version).source
    weights = Path(source.removeprefix("file://")) / "model.safetensors"
    assert weights.is_file() and str(weights).startswith(settings.tracking.artifact_location)
    weights.write_bytes(weights.read_bytes()[:-10])  # truncate the stored artifact
    with pytest.raises(BundleError, match="sha256 mismatch"):
        promote(settings, data["test"])
    assert registry.alias_version(settings.tracking, "champion") is None


def test_promote_without_challenger_is_a_clear_error(settings):
    with pytest.raises(PromotionError, match="challenger"):
        promote(settings, None)


def test_registered_run_has_params_and_per_epoch_metrics(settings, data):
    import mlflow

    version = register(settings, data, trained(data, 1), "epochs")
    client = mlflow.MlflowClient(settings.tracking.uri)
    run_id = client.get_model_version(settings.tracking.registered_model, version).run_id
    history = client.get_metric_history(run_id, "epoch.valid_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(0, 0.5), (1, 0.4)]
    assert client.get_run(run_id).data.params["p"] == "1"
