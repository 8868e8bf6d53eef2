"""Ingest through Ray Data on the shared local cluster: mixed sources with schema drift, re-runs and
appends, files cut into many splits, unreadable input, and a real S3-compatible server."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from blake3 import blake3

from mlinfra_ray import lake, sources
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.fraud import generate_transactions, write_raw
from mlinfra_ray.ingest import DataQualityError, ingest, read_clean
from mlinfra_ray.ingest_read import read_validated, task_groups
from mlinfra_ray.settings import MessSettings, SyntheticSettings
from mlinfra_ray.sources import RawInputError
from tests.s3_server import moto_server
from tests.unit.test_contract import GOOD

pytestmark = pytest.mark.ray
CONTRACT = compose_settings([]).contract
FIELDS = list(GOOD)


def row(i: int, **changes) -> dict:
    return {**GOOD, "transaction_id": f"tx{i:08d}", **changes}


def write_csv(path: Path, rows: list[dict], fields: list[str] = FIELDS, extra_lines: tuple = ()) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue() + "".join(line + "\n" for line in extra_lines))
    return path


def mixed_sources(folder: Path) -> None:
    """Four files whose columns differ the way real feeds drift over time."""
    folder.mkdir(parents=True, exist_ok=True)
    old = [f for f in FIELDS if f not in ("distance_from_home_km", "device_age_days")]  # older export
    write_csv(folder / "2026-01-old.csv", [row(i) for i in range(5)], old)
    write_csv(folder / "2026-02-new.csv", [{**row(i), "promo": "spring"} for i in range(5, 10)] +
              [row(10, amount="12,50 EUR")], [*FIELDS, "promo"], extra_lines=("tx00000011,broken",))
    lines = [json.dumps(row(i)) for i in (12, 13)] + ['{"transaction_id": "tx0000', json.dumps(row(5))]
    (folder / "2026-03.jsonl").write_text("\n".join(lines) + "\n")
    legacy = pa.table({"transaction_id": [f"tx{i:08d}" for i in (14, 15)], "user_id": ["u000001"] * 2,
                       "merchant_id": ["m00001"] * 2, "event_time": pa.array([1767323045, 1767323046],
                                                                             pa.timestamp("s", "UTC")),
                       "amount": [3.5, -1.0], "merchant_category": ["grocery"] * 2, "country": ["DE"] * 2,
                       "is_fraud": pa.array([0, 1], pa.int64())})  # no channel column at all
    pq.write_table(legacy, folder / "2026-04-legacy.parquet")


def test_mixed_sources_with_schema_drift(ray_cluster, tmp_path):
    mixed_sources(tmp_path / "raw")
    r = ingest(str(tmp_path / "raw"), str(tmp_path / "lake"), lenient())
    # 5 old + 6 new + 1 broken + 4 jsonl lines + 2 parquet rows
    assert r.rows_in == 18 == r.clean + r.quarantined + r.duplicates_removed
    assert (r.clean, r.quarantined, r.duplicates_removed) == (12, 5, 1)  # tx5 re-sent in the JSON file
    assert r.reasons == {"type:amount": 1, "parse:too_few_fields": 1, "parse:json": 1, "missing:channel": 2,
                         "range:amount": 1}
    assert r.extra_columns == {"promo": 5}
    quarantined = pq.read_table(r.quarantine_path).to_pylist()
    q = {(Path(x["_source_file"]).name, x["_line"]): x["_reasons"] for x in quarantined}
    assert q[("2026-02-new.csv", 7)] == "type:amount" and q[("2026-02-new.csv", 8)] == "parse:too_few_fields"
    assert q[("2026-03.jsonl", 3)] == "parse:json" and q[("2026-04-legacy.parquet", 1)] == "missing:channel"
    assert q[("2026-04-legacy.parquet", 2)] == "range:amount;missing:channel"
    clean = read_clean(str(tmp_path / "lake"), lenient())
    assert clean.num_rows == 12 and "promo" not in clean.column_names
    older = clean.filter(pa.compute.equal(clean["transaction_id"], "tx00000001"))
    assert older["device_age_days"].to_pylist() == [None]  # the column the older file lacked
    manifest = lake.load_manifest(tmp_path / "lake")
    for entry in manifest["files"]:
        assert entry["blake3"] == blake3(Path(entry["path"]).read_bytes()).hexdigest()  # what `b3sum` prints
    report = json.loads((tmp_path / "lake" / "quality.json").read_text())
    assert report["extra_columns"] == {"promo": 5} and len(report["files"]) == 4


def lenient():
    """The fraud contract with room for this small, deliberately messy set (4 of 18 rows bad)."""
    import dataclasses

    return dataclasses.replace(CONTRACT, max_quarantine_fraction=0.5)


def test_reruns_are_idempotent_and_new_files_append(ray_cluster, tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "lake"
    raw.mkdir()
    write_csv(raw / "a.csv", [row(i) for i in range(10)])
    first = ingest(str(raw), str(root), CONTRACT)
    parts = lake.load_manifest(root)["clean_files"]
    again = ingest(str(raw), str(root), CONTRACT)
    assert (again.rows_in, again.snapshot_id) == (0, first.snapshot_id)
    assert again.skipped_files == [str(raw / "a.csv")]
    os.utime(raw / "a.csv", (1, 1))  # touched, same bytes: recognised by content hash, not re-ingested
    assert ingest(str(raw), str(root), CONTRACT).rows_in == 0
    assert lake.load_manifest(root)["clean_files"] == parts
    write_csv(raw / "b.csv", [row(3), row(10), row(11)])  # one row re-sent from a.csv
    appended = ingest(str(raw), str(root), CONTRACT)
    assert (appended.rows_in, appended.clean, appended.duplicates_removed) == (3, 2, 1)
    assert appended.snapshot_id != first.snapshot_id
    assert read_clean(str(root), CONTRACT).num_rows == 12
    manifest = lake.load_manifest(root)
    assert (manifest["rows_in"], manifest["clean"], manifest["duplicates_removed"]) == (13, 12, 1)


def test_big_file_is_split_and_line_numbers_stay_exact(ray_cluster, tmp_path, monkeypatch):
    cfg = SyntheticSettings(rows=3000, files=1, json_fraction=0.0, mess=MessSettings(corrupt_rate=0.05))
    write_raw(generate_transactions(cfg), tmp_path / "raw", cfg)
    path = tmp_path / "raw" / "transactions_00.csv"
    monkeypatch.setattr(sources, "SPLIT_BYTES", 16 * 1024)
    assert len(sources.plan_splits(sources.list_raw_files(str(path)))) > 10
    ctx = ray.data.DataContext.get_current()
    before = (ctx.op_resource_reservation_enabled, ctx.raise_original_map_exception)
    r = ingest(str(path), str(tmp_path / "lake"), lenient())
    # the read switches Ray Data's per-operator CPU reservation off for itself only
    assert (ctx.op_resource_reservation_enabled, ctx.raise_original_map_exception) == before
    lines = path.read_text().split("\n")
    assert r.rows_in == len([x for x in lines[1:] if x])
    for q in pq.read_table(r.quarantine_path).to_pylist():
        line = lines[q["_line"] - 1]
        if q["_reasons"].startswith("parse:"):
            assert q["_raw"] == line
        else:
            assert line.startswith(json.loads(q["_raw"])["transaction_id"] + ",")
    # several splits per Ray task, each task's rejected lines shipped as one table at its end:
    # the same rows, in the same order, as one split at a time (dictionaries may differ)
    files = sources.list_raw_files(str(path))
    assert max(len(g) for g in task_groups(sources.plan_splits(files), int(ray.cluster_resources()["CPU"]))) > 1
    on_ray, local = read_validated(files, lenient())[0], read_validated(files, lenient(), use_ray=False)[0]
    assert on_ray.num_rows == local.num_rows and on_ray.to_pylist() == local.to_pylist()
    data = path.read_bytes()
    parts = [blake3(data[i:i + 16 * 1024]).hexdigest() for i in range(0, len(data), 16 * 1024)]
    assert r.files[0]["blake3"] == sources.file_digest(parts)


def test_unreadable_input_fails_naming_the_file(ray_cluster, tmp_path):
    (tmp_path / "raw").mkdir()
    write_csv(tmp_path / "raw" / "ok.csv", [row(1)])
    (tmp_path / "raw" / "latin1.csv").write_bytes("transaction_id\ncafé\n".encode("latin-1"))
    with pytest.raises(RawInputError, match=r"latin1\.csv: not valid UTF-8 at byte 18"):
        ingest(str(tmp_path / "raw"), str(tmp_path / "lake"), CONTRACT)


def test_error_budget_leaves_the_snapshot_alone(ray_cluster, tmp_path):
    raw, root = tmp_path / "raw", tmp_path / "lake"
    raw.mkdir()
    write_csv(raw / "a.csv", [row(i) for i in range(10)])
    ingest(str(raw), str(root), CONTRACT)
    write_csv(raw / "b.csv", [row(20 + i, amount="oops") for i in range(5)] + [row(30)])
    with pytest.raises(DataQualityError, match=r"83\.3% of rows quarantined.*type:amount \(5\)"):
        ingest(str(raw), str(root), CONTRACT)
    assert read_clean(str(root), CONTRACT).num_rows == 10
    assert [Path(f["path"]).name for f in lake.load_manifest(root)["files"]] == ["a.csv"]


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        yield server


def test_ingest_from_s3_matches_local(ray_cluster, s3, tmp_path):
    mixed_sources(tmp_path / "raw")
    s3.upload("mlinfra-raw", tmp_path / "raw", "incoming/2026")
    remote = ingest(s3.uri("mlinfra-raw/incoming"), str(tmp_path / "lake_s3"), lenient())
    local = ingest(str(tmp_path / "raw"), str(tmp_path / "lake_local"), lenient())
    assert (remote.rows_in, remote.clean, remote.quarantined, remote.duplicates_removed, remote.reasons) == \
        (local.rows_in, local.clean, local.quarantined, local.duplicates_removed, local.reasons)
    shown = [f["path"] for f in remote.files]
    assert shown[0] == "s3://mlinfra-raw/incoming/2026/2026-01-old.csv"  # no credentials, no query
    assert not any("testing" in p or "endpoint" in p for p in shown)
    assert [f["blake3"] for f in remote.files] == [f["blake3"] for f in local.files]
    assert ingest(s3.uri("mlinfra-raw/incoming/*/*.csv"), str(tmp_path / "lake_s3"), lenient()).rows_in == 0
