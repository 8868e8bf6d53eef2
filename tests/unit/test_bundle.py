"""Bundle round trip; a tampered, truncated or padded bundle is refused."""

import dataclasses

import numpy as np
import pytest

from mlinfra_ray.bundle import BundleError, load_bundle, save_bundle
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.features.transforms import drift_matrix, fit_feature_state
from mlinfra_ray.models import build_model

S = compose_settings(["data.synthetic.rows=1000"])
MODEL = {"name": "mlp", "hidden": [8], "dropout": 0.0}


@pytest.fixture
def bundle_dir(tmp_path):
    table = generate_transactions(S.data.synthetic)
    state = fit_feature_state(table, S.features, "event_time")
    model = build_model(MODEL, len(state["feature_names"]))
    parts = {"feature_state": state, "contract": dataclasses.asdict(S.contract), "model": MODEL,
             "config": {}, "lineage": {"git_sha": "x"}, "metrics": {"threshold": 0.3}, "drift": {}}
    path = save_bundle(tmp_path / "b", model.state_dict(), parts, drift_matrix(state, table))
    return path, table, model


def test_round_trip_predicts_like_the_original(bundle_dir):
    path, table, model = bundle_dir
    b = load_bundle(path)
    scores = b.predict(table)
    assert scores.shape == (table.num_rows,) and ((scores > 0) & (scores < 1)).all()
    assert b.threshold == 0.3 and b.contract.label == "is_fraud"
    assert b.drift_reference().shape[0] == table.num_rows


@pytest.mark.parametrize("damage", ["flip", "truncate", "extra", "delete"])
def test_damaged_bundle_is_refused(bundle_dir, damage):
    path = bundle_dir[0]
    weights = path / "model.safetensors"
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "extra":
        (path / "evil.pkl").write_bytes(b"x")
    else:
        (path / "metrics.json").unlink()
    with pytest.raises(BundleError):
        load_bundle(path)


def test_unknown_model_family_is_an_error():
    with pytest.raises(ValueError, match="model.name"):
        build_model({"name": "gbdt"}, 3)


def test_reference_is_not_pickled(bundle_dir):
    np.load(bundle_dir[0] / "drift_reference.npy", allow_pickle=False)
