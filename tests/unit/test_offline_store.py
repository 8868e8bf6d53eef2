"""Offline store bookkeeping without Ray: versioned feature states, view definitions, errors."""

import dataclasses
import json

import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.features.offline import OfflineStore, OfflineStoreError, definition

VIEW = compose_settings([]).features.views[0]


def test_states_are_versioned_json_and_verified(tmp_path):
    store = OfflineStore(tmp_path)
    with pytest.raises(OfflineStoreError, match="run jobs/features.py"):
        store.load_state()
    state = {"version": 2, "numeric": [{"name": "amount", "mean": 0.1 + 0.2}]}
    first = store.save_state(state, {"snapshot_id": "abc"})
    assert first["version"] == 1 and first["new"]
    assert store.save_state(json.loads(json.dumps(state)), {"snapshot_id": "abc"}) == {
        "version": 1, "sha256": first["sha256"], "new": False}
    changed = store.save_state({**state, "numeric": []}, {"snapshot_id": "def"})
    assert changed["version"] == 2 and store.state_versions() == [1, 2]
    record = store.load_state(1)
    assert record["state"] == state and record["snapshot_id"] == "abc"
    assert store.load_state()["version"] == 2
    path = tmp_path / "states" / "v000001.json"
    path.write_text(path.read_text().replace("0.30000000000000004", "0.3"))  # a hand edit
    with pytest.raises(OfflineStoreError, match="sha256 mismatch"):
        store.load_state(1)


def test_definition_covers_what_the_stored_rows_depend_on():
    assert definition(VIEW) == definition(dataclasses.replace(VIEW, ttl="1d", since_last=False))
    assert definition(VIEW) != definition(dataclasses.replace(VIEW, windows=["1h"]))
    assert definition(VIEW) != definition(dataclasses.replace(VIEW, column="distance_from_home_km"))


def test_reading_a_view_that_was_never_written_names_the_job(tmp_path):
    with pytest.raises(OfflineStoreError, match="run jobs/features.py"):
        OfflineStore(tmp_path).read_view(VIEW.name)
    assert OfflineStore(tmp_path).meta(VIEW.name) is None and OfflineStore(tmp_path).write_ids(VIEW.name) == []


def test_view_config_is_checked_at_start_up():
    from mlinfra_ray.features.stage import check_views

    s = compose_settings([])
    check_views(s.features, s.contract.entity_keys)
    for views, match in (([dataclasses.replace(VIEW, entity="country")], "not a contract entity key"),
                         ([dataclasses.replace(VIEW, windows=["1y"])], "bad duration"),
                         ([VIEW, VIEW], "duplicate view names"),
                         ([dataclasses.replace(VIEW, name="user-amount")], "letters, digits")):
        with pytest.raises(Exception, match=match):
            check_views(dataclasses.replace(s.features, views=views), s.contract.entity_keys)
