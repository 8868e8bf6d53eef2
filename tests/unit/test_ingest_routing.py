"""Routing and the lake without Ray: accounting, duplicates, error budget, outputs, manifest."""

import dataclasses
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from mlinfra_ray import lake
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.contract import EXTRA, EXTRA_TYPE, apply_contract
from mlinfra_ray.fingerprint import fingerprint, repeated
from mlinfra_ray.ingest import DataQualityError, ingest, read_clean, route_and_write
from mlinfra_ray.routing import DUPLICATE, KEY_FP, QUARANTINED, route, stable_argsort
from tests.unit.test_contract import GOOD

CONTRACT = compose_settings([]).contract


def batch(rows, extras=None):
    t = pa.Table.from_pylist(rows)
    t = t.append_column("_source_file", pa.array(["f.csv"] * len(rows)))
    t = t.append_column("_line", pa.array(range(2, len(rows) + 2), pa.int64()))
    if extras is not None:
        t = t.append_column(EXTRA, pa.array(extras, EXTRA_TYPE))
    return apply_contract(t, CONTRACT)


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
    assert json.loads(q["_raw"])["amount"] == "n/a"
    assert read_clean(str(tmp_path), CONTRACT).num_rows == 20
    report = json.loads((tmp_path / "quality.json").read_text())
    assert report["rows_in"] == 23 and report["accounting_ok"] and report["columns"]["amount"]["null_pct"] == 0
    expected = {"file": "f.csv", "line": 22, "column": "amount", "value": "n/a", "raw": q["_raw"]}
    assert report["examples"]["type:amount"][0] == expected
    assert "type:amount" in (tmp_path / "quality.md").read_text()
    html = (tmp_path / "quality.html").read_text()
    assert "<svg" in html and "23 rows in = 20 clean + 1 quarantined + 2 duplicates removed" in html
    metrics = (tmp_path / "metrics.prom").read_text()
    assert 'mlinfra_ingest_rows_total{outcome="quarantined"} 1.0' in metrics
    assert 'mlinfra_ingest_quarantined_rows_total{reason="type:amount"} 1.0' in metrics


def test_rerun_is_idempotent_and_keys_already_in_the_lake_are_duplicates(tmp_path):
    route_and_write(batch(rows()), [], tmp_path, CONTRACT)
    again = route_and_write(batch(rows()), [], tmp_path, CONTRACT)
    assert (again.clean, again.duplicates_removed) == (0, 22)
    assert read_clean(str(tmp_path), CONTRACT).num_rows == 20
    manifest = lake.load_manifest(tmp_path)
    assert (manifest["rows_in"], manifest["clean"], len(manifest["runs"])) == (46, 20, 2)


def test_error_budget_stops_before_anything_is_written(tmp_path):
    route_and_write(batch(rows(n_bad=0)), [], tmp_path, CONTRACT)
    before = lake.load_manifest(tmp_path)
    strict = dataclasses.replace(CONTRACT, max_quarantine_fraction=0.01)
    with pytest.raises(DataQualityError, match=r"12\.0% of rows quarantined.*type:amount \(3\)"):
        route_and_write(batch([{**r, "transaction_id": f"tx7{i:07d}"} for i, r in enumerate(rows(n_bad=3))]),
                        [], tmp_path, strict)
    assert lake.load_manifest(tmp_path) == before  # the snapshot downstream stages read is unchanged
    assert read_clean(str(tmp_path), CONTRACT).num_rows == 20
    assert json.loads((tmp_path / "quality.json").read_text())["over_budget"]
    assert "mlinfra_ingest_last_run_over_budget 1.0" in (tmp_path / "metrics.prom").read_text()
    assert list((tmp_path / "rejected").glob("*.parquet"))  # the rejected rows, for inspection


def test_first_occurrence_wins_and_quarantined_rows_are_not_duplicates():
    data = [{**GOOD, "transaction_id": "tx00000001", "amount": "n/a"},  # quarantined: not "first"
            {**GOOD, "transaction_id": "tx00000001", "amount": "1"},
            {**GOOD, "transaction_id": "tx00000001", "amount": "2"}]
    routed = route(batch(data), CONTRACT)
    assert routed.outcome.tolist() == [QUARANTINED, 0, DUPLICATE]
    assert routed.clean.column("amount").to_pylist() == [1.0]


def test_fingerprint_collisions_cannot_merge_different_keys():
    table = batch([{**GOOD, "transaction_id": f"tx{i:08d}"} for i in range(4)])
    table = table.append_column(KEY_FP, pa.array(np.zeros(4, np.uint64)))  # every fingerprint collides
    assert route(table, CONTRACT).duplicates == 0


def test_fingerprints_are_stable_across_slices_and_layouts():
    values = ["", "a", "ab", "abcdefgh", "abcdefghi", "é" * 9, "ab"]
    whole = fingerprint(pa.array(values))
    assert whole[2] == whole[6] and len(set(whole.tolist())) == 6
    assert fingerprint(pa.array(["zz", *values]).slice(1)).tolist() == whole.tolist()
    assert fingerprint(pa.array(values).dictionary_encode()).tolist() == whole.tolist()
    assert fingerprint(pa.chunked_array([values[:3], values[3:]])).tolist() == whole.tolist()
    assert repeated(whole).tolist() == [False, False, True, False, False, False, True]


def _reference_hash(value: bytes) -> int:
    """The documented fingerprint in plain Python: FNV-style mixing of 8-byte little-endian words."""
    mask, prime = 2**64 - 1, 0x100000001B3
    h = ((0xCBF29CE484222325 ^ len(value)) * prime) & mask
    for p in range(0, len(value), 8):
        mixed = ((h ^ int.from_bytes(value[p:p + 8], "little")) * prime) & mask
        h = mixed ^ (mixed >> 29)
    return h


def test_fingerprints_are_the_documented_hash_of_each_value():
    values = ["tx00000001", None, "tx00000002", "", "tx00000001", None, "éé€tx0", "a" * 17, "abcdefgh"]
    got = fingerprint(pa.array(values)).tolist()
    assert got == [_reference_hash((v or "").encode()) for v in values]  # nulls hash like ""
    assert got[0] == got[4] and got[1] == got[3] == got[5] and len(set(got)) == 6
    assert fingerprint(pa.array([b"\x00\xff", None], pa.binary())).tolist() == \
        [_reference_hash(b"\x00\xff"), _reference_hash(b"")]


def test_unknown_columns_are_counted_and_kept_or_dropped():
    extras = [[{"k": "promo", "v": "X"}], None, [{"k": "promo", "v": "Y"}, {"k": "channel", "v": "z"}]]
    data = [{**GOOD, "transaction_id": f"tx{i:08d}"} for i in range(3)]
    dropped = route(batch(data, extras), CONTRACT)
    assert dropped.extras == {"promo": 2, "channel": 1} and "promo" not in dropped.clean.column_names
    kept = route(batch(data, extras), dataclasses.replace(CONTRACT, extra_columns="keep"))
    assert kept.clean.column("promo").to_pylist() == ["X", None, "Y"]
    assert kept.clean.column("extra_channel").to_pylist() == [None, None, "z"]  # no clash with the contract


def test_readers_see_only_committed_parts(tmp_path):
    route_and_write(batch(rows()), [], tmp_path, CONTRACT)
    orphan = tmp_path / "clean" / "event_date=2026-01-02" / "part-crashed-0.parquet"
    pq.write_table(read_clean(str(tmp_path), CONTRACT), orphan)  # a run that died before committing
    assert read_clean(str(tmp_path), CONTRACT).num_rows == 20
    assert lake.remove_unlisted(tmp_path, lake.load_manifest(tmp_path)) == 1 and not orphan.exists()


def test_changed_contract_rebuilds_the_snapshot(tmp_path):
    first = route_and_write(batch(rows()), [], tmp_path, CONTRACT)
    looser = dataclasses.replace(CONTRACT, max_quarantine_fraction=0.5)
    second = route_and_write(batch(rows()), [], tmp_path, looser)
    assert second.clean == 20 and second.snapshot_id != first.snapshot_id  # not 0: nothing was "seen"
    assert read_clean(str(tmp_path), CONTRACT).num_rows == 20
    parts = list((tmp_path / "clean").rglob("*.parquet"))
    assert len(parts) == len(lake.load_manifest(tmp_path)["clean_files"])  # the old snapshot's are gone


def test_a_lake_in_the_old_single_file_layout_is_rebuilt(tmp_path):
    old = tmp_path / "clean" / "event_date=2026-01-02"
    old.mkdir(parents=True)
    pq.write_table(pa.table({"stale": [1]}), old / "part-0.parquet")
    pq.write_table(pa.table({"stale": [1]}), tmp_path / "quarantine.parquet")  # a file, not a folder
    (tmp_path / "manifest.json").write_text(json.dumps({"snapshot_id": "old"}))
    r = route_and_write(batch(rows()), [], tmp_path, CONTRACT)
    assert r.clean == 20 and read_clean(str(tmp_path), CONTRACT).num_rows == 20
    assert pq.read_table(tmp_path / "quarantine.parquet").num_rows == 1



def test_a_lake_from_before_blake3_is_rebuilt_not_duplicated(tmp_path):
    """Lake format 2 recorded SHA-256 content hashes; format 3 records BLAKE3 (what `b3sum`
    prints for a file of one split). An older lake is rebuilt from all inputs, so no content
    check compares hashes of two kinds and no row is counted twice."""
    raw = tmp_path / "raw.csv"
    raw.write_text(",".join(GOOD) + "\n" + "".join(
        ",".join({**GOOD, "transaction_id": f"tx{i:08d}"}.values()) + "\n" for i in range(5)))
    first = ingest(str(raw), str(tmp_path / "lake"), CONTRACT, use_ray=False)
    manifest = lake.load_manifest(tmp_path / "lake")
    assert manifest["format"] == 3 and manifest["files"][0]["blake3"] == blake3(raw.read_bytes()).hexdigest()
    files = [{**{k: v for k, v in f.items() if k != "blake3"}, "sha256": "0" * 64} for f in manifest["files"]]
    old = {**manifest, "format": 2, "files": files}
    (tmp_path / "lake" / "manifest.json").write_text(json.dumps(old))
    again = ingest(str(raw), str(tmp_path / "lake"), CONTRACT, use_ray=False)
    assert (first.clean, again.clean, again.duplicates_removed) == (5, 5, 0)
    assert read_clean(str(tmp_path / "lake"), CONTRACT).num_rows == 5
    assert lake.load_manifest(tmp_path / "lake")["files"][0]["blake3"] == manifest["files"][0]["blake3"]

@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-3, 3), max_size=60), st.integers(0, 2**40))
def test_stable_argsort_is_numpys_stable_argsort(small, scale):
    keys = np.array(small, np.int64) * scale  # few distinct values: long runs of ties
    assert stable_argsort(keys).tolist() == np.argsort(keys, kind="stable").tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 40), st.integers(2**63, 2**63 + 40)),
                max_size=300))
def test_repeated_marks_exactly_the_values_seen_twice(values):
    """Small values share their top bits (the prefix bitmap then passes them to the exact test)."""
    fp = np.array(values, np.uint64)
    counts = Counter(values)
    assert repeated(fp).tolist() == [counts[v] > 1 for v in values]


@pytest.mark.parametrize("seed", [0, 1])
def test_repeated_on_keys_enough_for_two_threads(seed):
    """Past 200k keys the prefix lookups run in two halves: repeats within each half, across the
    halves, on the seam and prefix-only matches are all found, and nothing else."""
    rng = np.random.default_rng(seed)
    fp = rng.integers(0, 2**64, 300_000, dtype=np.uint64)
    half = len(fp) // 2
    fp[[5, half - 1, half + 3, half + 4, len(fp) - 1]] = fp[[7, half, 11, half + 10, half - 2]]
    fp[[20, half + 20]] = fp[21] ^ np.uint64(1), fp[21] ^ np.uint64(2)  # same high word, other low word
    _, inverse, counts = np.unique(fp, return_inverse=True, return_counts=True)
    assert repeated(fp).tolist() == (counts[inverse] > 1).tolist()
    assert repeated(fp).sum() == 10


def test_routing_on_the_driver_does_not_import_numba(tmp_path):
    """The read tasks fingerprint the keys; the driver only routes. Importing numba there would
    cost every one-shot ingest job ~0.4 s (import + loading cached kernels)."""
    import subprocess
    import sys
    from pathlib import Path

    table = batch(rows())
    table = table.append_column(KEY_FP, pa.array(fingerprint(table.column("transaction_id"))))
    path = tmp_path / "validated.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    code = ("import sys, pyarrow as pa\n"
            "from mlinfra_ray.compose import compose_settings\n"
            "from mlinfra_ray.routing import route\n"
            f"r = route(pa.ipc.open_file({str(path)!r}).read_all(), compose_settings([]).contract)\n"
            "assert (r.n_clean, r.duplicates) == (20, 2) and r.clean.num_rows == 20\n"
            "assert 'numba' not in sys.modules, 'routing imported numba'\n")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 40), st.integers(2**63, 2**63 + 40)),
                max_size=200), st.lists(st.integers(0, 200), max_size=4))
def test_repeated_reads_a_list_of_parts_as_their_concatenation(values, cuts):
    """A chunked column's fingerprints go in chunk by chunk: repeats across and within parts, with
    empty parts anywhere, are those of the whole array."""
    fp = np.array(values, np.uint64)
    bounds = [0, *sorted(min(c, len(fp)) for c in cuts), len(fp)]
    parts = [fp[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert repeated(parts).tolist() == repeated(fp).tolist()


def test_a_good_row_repeating_only_a_quarantined_rows_key_is_clean():
    """Every row's fingerprint is sorted (the quarantined ones leave the candidates afterwards):
    a key shared by a quarantined row and one good row is no duplicate, even across chunks."""
    data = [{**GOOD, "transaction_id": "tx00000001", "amount": "n/a"},
            {**GOOD, "transaction_id": "tx00000002"},
            {**GOOD, "transaction_id": "tx00000001"},
            {**GOOD, "transaction_id": "tx00000002", "channel": "fax"},
            {**GOOD, "transaction_id": "tx00000002"}]
    table = batch(data)
    table = table.append_column(KEY_FP, pa.array(fingerprint(table.column("transaction_id"))))
    chunked = pa.concat_tables([table.slice(0, 2), table.slice(2)])
    for t in (table, chunked):
        assert route(t, CONTRACT).outcome.tolist() == [QUARANTINED, 0, 0, QUARANTINED, DUPLICATE]


def test_quarantine_text_columns_per_chunk_shape():
    """Chunk by chunk: one value per chunk (a block's `_source_file`), one value with nulls,
    several values — the same strings as Arrow's take across the chunks."""
    from mlinfra_ray.routing import _take_text

    one = pa.DictionaryArray.from_arrays(pa.array([0, 0, 0], pa.int32()), pa.array(["a.csv"]))
    nulls = pa.DictionaryArray.from_arrays(pa.array([0, None, 0], pa.int32()), pa.array(["b.csv"]))
    several = pa.DictionaryArray.from_arrays(pa.array([1, 0, 1], pa.int32()), pa.array(["c.csv", "d.csv"]))
    col = pa.chunked_array([one, nulls, several])
    rows = np.array([0, 2, 3, 4, 6, 7])
    assert _take_text(col, rows).to_pylist() == ["a.csv", "a.csv", "b.csv", None, "d.csv", "c.csv"]
    assert _take_text(col, rows).to_pylist() == col.take(pa.array(rows)).cast(pa.string()).to_pylist()


def test_outcome_counts_refuse_unknown_codes():
    from mlinfra_ray.routing import Routed

    empty = pa.table({"x": pa.array([], pa.int64())})
    counts = Routed(empty, empty, np.array([0, 1, 2, 2, 0], np.int8), Counter(), {}).counts
    assert counts.tolist() == [2, 1, 2]
    with pytest.raises(ValueError, match="outcome"):
        Routed(empty, empty, np.array([0, 3], np.int8), Counter(), {})


def test_quarantine_is_in_file_line_order_whatever_the_split(tmp_path):
    """A split's lines the parser rejected follow its parsed rows in the validated table; the
    quarantine still lists rows by line, so it does not depend on where the input was cut."""
    from mlinfra_ray.ingest_read import read_split_lines
    from mlinfra_ray.sources import list_raw_files

    good = [",".join({**GOOD, "transaction_id": f"tx{i:08d}"}.values()) for i in range(6)]
    bad_amount = ",".join({**GOOD, "transaction_id": "tx90000000", "amount": "n/a"}.values())
    lines = [",".join(GOOD), good[0], "tx00000077,broken row", good[1], bad_amount, good[2], "x,y", good[3]]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    table, _, first_line = read_split_lines(list_raw_files(str(tmp_path / "a.csv")), CONTRACT, use_ray=False)
    assert table.column("_line").to_pylist()[-2:] == [2, 6]  # the rejected lines come last in the table
    quarantine = route(table, CONTRACT, first_line=first_line).quarantine
    assert quarantine.column("_line").to_pylist() == [3, 5, 7]
    short = "parse:too_few_fields"
    assert quarantine.column("_reasons").to_pylist() == [short, "type:amount", short]
