"""Routing without Ray: accounting invariant, duplicates, error budget, outputs."""

import dataclasses
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.contract import apply_contract
from mlinfra_ray.ingest import DataQualityError, read_clean, route_and_write
from tests.unit.test_contract import GOOD

CONTRACT = compose_settings([]).contract


def batch(rows):
    t = pa.Table.from_pylist(rows)
    t = t.append_column("_source_file", pa.array(["f.csv"] * len(rows)))
    return apply_contract(t.append_column("_line", pa.array(range(2, len(rows) + 2), pa.int64())), CONTRACT)


def rows(n_good=20, n_bad=1, n_dup=2):
    good = [{**GOOD, "transaction_id": f"tx{i:08d}"} for i in range(n_good)]
    bad = [{**GOOD, "transaction_id": f"tx9{i:07d}", "amount": "n/a"} for i in range(n_bad)]
    return good + bad + good[:n_dup]


def test_accounting_duplicates_and_outputs(tmp_path):
    r = route_and_write(batch(rows()), [], tmp_path, CONTRACT)
    assert (r.rows_in, r.clean, r.quarantined, r.duplicates_removed) == (23, 20, 1, 2)
    assert r.reasons == {"type:amount": 1}
    q = pq.read_table(r.quarantine_path).to_pylist()[0]
    assert q["_source_file"] == "f.csv" and q["_line"] == 22 and q["columns"] == "amount"
    assert read_clean(str(tmp_path), CONTRACT).num_rows == 20
    report = json.loads((tmp_path / "quality.json").read_text())
    assert report["rows_in"] == 23 and report["columns"]["amount"]["null_pct"] == 0
    assert "type:amount" in (tmp_path / "quality.md").read_text()


def test_rerun_is_idempotent(tmp_path):
    route_and_write(batch(rows()), [], tmp_path, CONTRACT)
    route_and_write(batch(rows()), [], tmp_path, CONTRACT)
    assert read_clean(str(tmp_path), CONTRACT).num_rows == 20


def test_error_budget_stops_before_clean_data_is_written(tmp_path):
    strict = dataclasses.replace(CONTRACT, max_quarantine_fraction=0.01)
    with pytest.raises(DataQualityError, match=r"type:amount \(3\)"):
        route_and_write(batch(rows(n_bad=3)), [], tmp_path, strict)
    assert not (tmp_path / "clean").exists() and (tmp_path / "quality.md").exists()
