"""Fitted feature state is JSON and the transform is batch-invariant (bit-identical per row)."""

import json

import numpy as np
import pyarrow as pa
import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.features.transforms import (
    drift_columns,
    drift_matrix,
    fit_feature_state,
    transform,
)

SETTINGS = compose_settings(["data.synthetic.rows=3000"])


@pytest.fixture(scope="module")
def table():
    return generate_transactions(SETTINGS.data.synthetic)


@pytest.fixture(scope="module")
def state(table):
    return fit_feature_state(table.slice(0, 2000), SETTINGS.features, "event_time")


def test_state_round_trips_through_json(state, table):
    again = json.loads(json.dumps(state))
    np.testing.assert_array_equal(transform(again, table), transform(state, table))


def test_shape_and_names(state, table):
    x = transform(state, table)
    assert x.dtype == np.float32 and x.shape == (table.num_rows, len(state["feature_names"]))
    assert np.isfinite(x).all()


def test_each_row_is_bit_identical_alone_and_in_a_batch(state, table):
    batch = transform(state, table.slice(0, 500))
    for i in (0, 17, 499):
        one = transform(state, table.slice(i, 1))
        assert one.tobytes() == batch[i : i + 1].tobytes()


def test_unseen_and_missing_values_are_handled(state):
    row = {c: None for c in ["amount", "distance_from_home_km", "device_age_days"]}
    row.update(channel="carrier-pigeon", merchant_category=None, country="ZZ",
               event_time=pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py())
    x = transform(state, pa.Table.from_pylist([row]))
    names = state["feature_names"]
    assert x[0, names.index("channel=<other>")] == 1.0
    assert np.isfinite(x).all()


def test_train_statistics_only(state, table):
    """Scaling uses the fitted window: the training slice is centred, a later slice need not be."""
    amount = state["feature_names"].index("amount")
    assert abs(transform(state, table.slice(0, 2000))[:, amount].mean()) < 1e-3


def test_drift_matrix_columns(state, table):
    names, cats = drift_columns(state)
    m = drift_matrix(state, table)
    assert m.shape == (table.num_rows, len(names))
    for idx, n in cats.items():
        assert m[:, idx].max() < n and m[:, idx].min() >= 0
