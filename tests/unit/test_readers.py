"""Raw readers keep every line: rejected lines come back with their text, reason and line number,
whatever path (pyarrow fast path or exact line-by-line path) parsed them, and however the file
was cut into splits."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.parquet as pq
import pytest

from mlinfra_ray import readers, sources
from mlinfra_ray.contract import EXTRA, EXTRA_TYPE, LINE, PARSE_ERROR, RAW_TEXT, SOURCE
from mlinfra_ray.ingest_read import in_split_order, task_groups
from mlinfra_ray.readers import Layout, RawInputError, read_raw_file
from mlinfra_ray.sources import list_raw_files, plan_splits

COLS = ["a", "b", "c"]


def rows(table: pa.Table, *names: str) -> list[tuple]:
    t = table.sort_by(LINE)
    return list(zip(*(t.column(n).to_pylist() for n in names), strict=True))


def write(tmp_path, name: str, content: str | bytes):
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(f)


@pytest.mark.parametrize(("text", "expected"), [
    # (line, a, reason, raw text) — header is line 1
    ("a,b\n1,2\n3\n4,5,6\n7,8\n",
     [(2, "1", None, None), (3, None, "parse:too_few_fields", "3"),
      (4, None, "parse:too_many_fields", "4,5,6"), (5, "7", None, None)]),
    ('a,b\n1,2\n"3,4\n5,6\n',  # an unterminated quote costs its own line only
     [(2, "1", None, None), (3, None, "parse:unterminated_quote", '"3,4'), (4, "5", None, None)]),
    ("a,b\n1,2\n\n\n7,8\n",  # blank lines are not records but keep the numbering physical
     [(2, "1", None, None), (5, "7", None, None)]),
    ("\n\na,b\n1,2\n",  # blank lines before the header
     [(4, "1", None, None)]),
    ("a,b\r\n1,2\r\n3,4\r\n",  # CRLF
     [(2, "1", None, None), (3, "3", None, None)]),
    ('a,b\n"x, y",2\n"say ""hi""",3\n',  # quoting done right is not an error
     [(2, "x, y", None, None), (3, 'say "hi"', None, None)]),
    ("a,b\n1,2", [(2, "1", None, None)]),  # no final newline
    ("a,b\n1,2\n\n\n", [(2, "1", None, None)]),  # trailing blank lines
])
def test_csv_lines_are_all_accounted_for(tmp_path, text, expected):
    t = read_raw_file(write(tmp_path, "x.csv", text), COLS)
    assert rows(t, LINE, "a", PARSE_ERROR, RAW_TEXT) == expected
    assert t.column("c").null_count == t.num_rows  # a column the file lacks → null, not an error


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_utf8_with_or_without_bom(tmp_path, bom):
    t = read_raw_file(write(tmp_path, "bom.csv", bom + "a,b\ncafé,1\n".encode()), COLS)
    assert rows(t, "a", "b") == [("café", "1")]
    j = read_raw_file(write(tmp_path, "bom.jsonl", bom + b'{"a": "x"}\n'), COLS)
    assert rows(j, "a", LINE) == [("x", 1)]


@pytest.mark.parametrize(("name", "content"), [
    ("latin1.csv", "a,b\ncafé,1\n".encode("latin-1")),
    ("latin1_bad_row.csv", "a,b\n1,2\ncafé\n".encode("latin-1")),
    ("latin1.jsonl", '{"a": "café"}\n'.encode("latin-1")),
])
def test_undecodable_file_names_the_file_and_byte(tmp_path, name, content):
    with pytest.raises(RawInputError, match=rf"{name}: not valid UTF-8 at byte \d+"):
        read_raw_file(write(tmp_path, name, content), COLS)


@pytest.mark.parametrize(("text", "expected"), [
    ('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n', [(1, "1", None), (2, "2", None)]),  # fast path
    ('{"a": 1, "b": "x"}\n{"a": "two", "b": 3}\n', [(1, "1", None), (2, "two", None)]),  # mixed types
    ('{"a": 1}\n{"a": \n\n{"c": 2.5}\n[1]\n',
     [(1, "1", None), (2, None, "parse:json"), (4, None, None), (5, None, "parse:json_not_object")]),
])
def test_jsonl_lines_are_all_accounted_for(tmp_path, text, expected):
    t = read_raw_file(write(tmp_path, "x.jsonl", text), COLS)
    got = rows(t, LINE, "a", PARSE_ERROR)
    assert [(line, None if a is None else str(a), err) for line, a, err in got] == expected


def test_jsonl_fast_and_exact_paths_agree(tmp_path):
    clean = '{"a": "x", "b": 1.5, "c": true}\n{"a": "y", "b": 2, "c": false}\n'
    fast = read_raw_file(write(tmp_path, "fast.jsonl", clean), COLS)
    exact = read_raw_file(write(tmp_path, "exact.jsonl", clean + "{broken\n"), COLS)
    assert [str(v) for v in fast.column("b").to_pylist()] == ["1.5", "2"]
    assert exact.column("b").to_pylist()[:2] == ["1.5", "2"] and exact.column("c").to_pylist()[:2] == \
        ["true", "false"]


def test_unknown_columns_are_carried_not_lost(tmp_path):
    csv_rows = read_raw_file(write(tmp_path, "new.csv", "a,b,promo\n1,2,X\n3,4,\n"), COLS)
    assert csv_rows.column(EXTRA).to_pylist() == [[{"k": "promo", "v": "X"}], None]
    js = read_raw_file(write(tmp_path, "new.jsonl", '{"a": 1, "promo": "Y"}\n{"a": 2}\n'), COLS)
    assert js.column(EXTRA).to_pylist() == [[{"k": "promo", "v": "Y"}], None]


def test_parquet_keeps_native_types_and_row_numbers(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1.5, None], "z": ["extra", None]}), path)
    t = read_raw_file(str(path), COLS)
    assert t.schema.field("a").type == pa.float64() and rows(t, LINE, "a") == [(1, 1.5), (2, None)]
    assert t.column(EXTRA).to_pylist() == [[{"k": "z", "v": "extra"}], None]


@pytest.mark.parametrize("tail", [1 << 16, 3])  # 3: a line's end lies past the first read after the split
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_splits_cut_anywhere_keep_every_line_once(tmp_path, monkeypatch, kind, tail):
    """Cut a file into 7-byte splits: lines straddle every boundary; each is read exactly once,
    with its physical line number, and the content hash does not depend on the cut."""
    body = [f"{i},{'x' * (i % 5)}" if i % 4 else f"{i}" for i in range(1, 40)]
    if kind == "jsonl":
        body = [json.dumps({"a": str(i)}) if i % 4 else "{oops" for i in range(1, 40)]
    text = ("a,b\n" if kind == "csv" else "") + "\n".join(body) + "\n"
    path = write(tmp_path, f"x.{kind}", text)
    whole = read_raw_file(path, COLS)
    monkeypatch.setattr(sources, "SPLIT_BYTES", 7)
    monkeypatch.setattr(readers, "TAIL", tail)
    assert len(plan_splits(list_raw_files(path))) > 20
    cut = read_raw_file(path, COLS)
    assert rows(cut, LINE, "a", PARSE_ERROR) == rows(whole, LINE, "a", PARSE_ERROR)
    first = 2 if kind == "csv" else 1
    assert sorted(cut.column(LINE).to_pylist()) == list(range(first, first + 39))


def test_header_only_and_empty_files_have_no_rows(tmp_path):
    assert read_raw_file(write(tmp_path, "h.csv", "a,b\n"), COLS).num_rows == 0
    assert read_raw_file(write(tmp_path, "e.csv", ""), COLS).num_rows == 0
    assert read_raw_file(write(tmp_path, "e.jsonl", "\n\n"), COLS).num_rows == 0


def test_duplicate_header_names_fail_with_the_file(tmp_path):
    with pytest.raises(RawInputError, match="dup.csv: header has duplicate column names"):
        read_raw_file(write(tmp_path, "dup.csv", "a,a\n1,2\n"), COLS)


def test_source_file_is_shown_without_query(tmp_path):
    t = read_raw_file(write(tmp_path, "x.csv", "a\n1\n"), COLS)
    assert t.column(SOURCE).to_pylist() == [str(tmp_path / "x.csv")]


def test_layout_types_csv_columns(tmp_path):
    lay = Layout(columns=["a", "b"], csv_infer=["a"])
    t = read_raw_file(write(tmp_path, "t.csv", "a,b\n1.5,web\n2,web\n"), lay)
    assert t.schema.field("a").type == pa.float64() and t.schema.field("b").type == pa.string()


def test_listing_files_folders_and_globs(tmp_path):
    for name in ["2026-01/a.csv", "2026-01/b.jsonl", "2026-02/c.parquet", "2026-02/notes.txt",
                 "2026-02/.hidden.csv", "_tmp/x.csv", "top.csv"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")

    def names(src):
        return [f.display.removeprefix(str(tmp_path) + "/") for f in list_raw_files(src)]

    assert names(str(tmp_path)) == ["2026-01/a.csv", "2026-01/b.jsonl", "2026-02/c.parquet", "top.csv"]
    assert names(f"{tmp_path}/2026-0*/*.csv") == ["2026-01/a.csv"]
    assert names(f"{tmp_path}/**/*.parquet") == ["2026-02/c.parquet"]
    assert names(f"{tmp_path}/top.csv") == ["top.csv"]
    assert names([f"{tmp_path}/top.csv", f"{tmp_path}/*.csv"]) == ["top.csv"]
    with pytest.raises(FileNotFoundError, match="nope"):
        list_raw_files(f"{tmp_path}/nope")


@pytest.mark.parametrize(("sizes", "cpus", "waves", "loads"), [
    ([16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 5], 2, 1, [101, 96]),  # one 200-MB file, 2 CPUs
    ([16, 16, 3, 16, 7], 2, 1, [26, 32]), ([10], 4, 1, [10]), ([4, 4, 4, 4], 2, 2, [4, 4, 4, 4]),
    ([0, 0, 8], 2, 1, [8, 2])])  # empty files still go to a task (they still report their facts)
def test_task_groups_balance_bytes_and_keep_every_split_once(sizes, cpus, waves, loads):
    starts = np.cumsum([0] + sizes[:-1])
    splits = [{"split": i, "start": int(a), "end": int(a) + n}
              for i, (a, n) in enumerate(zip(starts, sizes, strict=True))]
    groups = task_groups(splits, cpus, waves)
    assert sorted(s["split"] for g in groups for s in g) == list(range(len(sizes)))
    assert all([s["split"] for s in g] == sorted(s["split"] for s in g) for g in groups)  # file order
    assert sorted(sum(max(s["end"] - s["start"], 1) for s in g) for g in groups) == sorted(loads)


def test_a_read_task_ships_the_rejected_lines_of_all_its_splits_as_one_table(tmp_path, monkeypatch):
    """Parsed rows split by split, then every split's rejected lines in one single-chunk table;
    put back in split order they are exactly what validating split by split gives."""
    from mlinfra_ray.compose import compose_settings
    from mlinfra_ray.ingest_read import read_and_validate, validate_split
    from tests.unit.test_contract import GOOD

    contract = compose_settings([]).contract
    good = [",".join({**GOOD, "transaction_id": f"tx{i:08d}"}.values()) for i in range(40)]
    lines = [",".join(GOOD)] + [x for i, g in enumerate(good) for x in ([g, f"tx{i:08d},broken"] if i % 7 == 0
                                                                      else [g])]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(sources, "SPLIT_BYTES", 1024)
    specs = plan_splits(list_raw_files(str(tmp_path / "a.csv")))
    assert len(specs) > 3
    lay = readers.layout(contract)
    out = list(read_and_validate(pa.table({"splits": [json.dumps(specs)]}), lay, contract))
    parsed, rejected = out[:-1], out[-1]
    assert len(parsed) == len(specs) and rejected.column(0).num_chunks == 1
    assert all(r.startswith("parse:") for r in rejected.column("_reasons").to_pylist())
    assert not any((r or "").startswith("parse:") for t in parsed for r in t.column("_reasons").to_pylist())
    assert rejected.num_rows == 6 and len(set(rejected.column("_split").to_pylist())) > 1
    one_by_one = pa.concat_tables([validate_split(spec, lay, contract) for spec in specs]).to_pylist()
    assert pa.concat_tables(in_split_order(out), promote_options="default").to_pylist() == one_by_one


def test_in_split_order_cuts_merged_blocks_back_into_splits():
    """A task's blocks may arrive merged (splits 0 and 2 in one table) or cut (split 3 in two)."""
    def block(ids, lines):
        return pa.table({"_split": pa.array(ids, pa.int32()), "_line": pa.array(lines, pa.int64())})

    tables = [block([3, 3], [5, 1]), block([0, 0, 2, 2, 2], [0, 1, 0, 2, 1]), block([], []),
              block([1], [0]), block([3], [2])]
    out = pa.concat_tables(in_split_order(tables))
    assert out.column("_split").to_pylist() == [0, 0, 1, 2, 2, 2, 3, 3, 3]
    assert out.column("_line").to_pylist() == [0, 1, 0, 0, 2, 1, 5, 1, 2]  # order within a split kept
    # Several splits per block, as chunks (one split's rows over two chunks, a chunk of two splits)
    chunked = pa.concat_tables([block([5, 5], [0, 1]), block([5, 6], [2, 0]), block([], []), block([7], [0])])
    out = pa.concat_tables(in_split_order([chunked, block([4, 4], [1, 0]), *tables]))
    assert out.column("_split").to_pylist() == [0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6, 7]
    assert out.column("_line").to_pylist() == [0, 1, 0, 0, 2, 1, 5, 1, 2, 1, 0, 0, 1, 2, 0, 0]


def test_validated_splits_share_one_schema_and_clean_rows_get_the_contract_types(tmp_path):
    """Categorical columns stay dictionary-encoded from every kind of input (CSV parses them so,
    JSON and Parquet are encoded after their checks), `_extra` is Arrow's null type in splits
    without unknown columns; the concatenation is one schema and clean rows are decoded."""
    from mlinfra_ray.compose import compose_settings
    from mlinfra_ray.contract import arrow_schema
    from mlinfra_ray.ingest_read import read_validated, validate_split
    from mlinfra_ray.routing import route
    from tests.unit.test_contract import GOOD

    contract = compose_settings([]).contract
    rows = [{**GOOD, "transaction_id": f"tx{i:08d}"} for i in range(6)]
    csv_lines = [",".join(GOOD)] + [",".join(r.values()) for r in rows[:3]]
    (tmp_path / "a.csv").write_text("\n".join(csv_lines) + "\n")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({**r, "extra_col": "x"}) + "\n" for r in rows[3:5]))
    pq.write_table(pa.Table.from_pylist(rows[5:]), tmp_path / "c.parquet")
    files = list_raw_files(str(tmp_path))
    lay = readers.layout(contract)
    parts = [validate_split(s, lay, contract) for s in plan_splits(files)]
    for part in parts:
        for name in ("channel", "merchant_category", "country"):
            assert part.schema.field(name).type == pa.dictionary(pa.int32(), pa.string())
    assert [p.schema.field(EXTRA).type == pa.null() for p in parts] == [True, False, True]
    table, _ = read_validated(files, contract, use_ray=False)
    routed = route(table, contract)
    assert routed.n_clean == 6 and table.schema.field(EXTRA).type == EXTRA_TYPE  # promoted: b.jsonl has one
    assert routed.clean.select([c.name for c in contract.columns]).schema == arrow_schema(contract)
    assert routed.clean.column("country").to_pylist() == [GOOD["country"].strip().upper()] * 6


def test_a_run_without_unknown_columns_still_writes_the_quarantine_schema(tmp_path):
    from mlinfra_ray.compose import compose_settings
    from mlinfra_ray.ingest_read import read_validated
    from mlinfra_ray.routing import QUARANTINE_COLUMNS, route
    from tests.unit.test_contract import GOOD

    contract = compose_settings([]).contract
    lines = [",".join(GOOD), ",".join(GOOD.values()), ",".join({**GOOD, "amount": "n/a"}.values()), "1,2"]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    table, _ = read_validated(list_raw_files(str(tmp_path)), contract, use_ray=False)
    assert table.schema.field(EXTRA).type == pa.null()  # nothing shipped for it
    q = route(table, contract).quarantine
    assert q.column_names == QUARANTINE_COLUMNS and q.schema.field(EXTRA).type == EXTRA_TYPE
    assert q.column(EXTRA).to_pylist() == [None, None] and q.num_rows == 2


@pytest.mark.parametrize(("values", "loose"), [
    (["1.5", " 2"], []),  # float64: what the contract reads too
    (["1.5", "n/a"], []),  # left as text by pyarrow: the contract reads the text
    (["", ""], []),  # all null
    (["7", "8"], []),  # int64, plain
    (["7", "0x1F"], ["a"]),  # int64 from hexadecimal
    (["7", "-0"], ["a"]),  # int64 0 from -0
    (["2026-01-02", "2026-01-03"], ["a"]),  # a date: re-read as text, its original spelling kept
])
def test_only_columns_pyarrow_may_have_misread_are_read_again_as_text(values, loose):
    from mlinfra_ray.parsers import _loosely_typed

    data = ("a,b\n" + "".join(f"{v},2026-01-0{i + 1}\n" for i, v in enumerate(values))).encode()
    table = pa.csv.read_csv(pa.py_buffer(data), convert_options=pa.csv.ConvertOptions(
        column_types={"b": pa.string()}, strings_can_be_null=True, null_values=[""]))
    assert _loosely_typed(table, {"b": pa.string()}, data, 4, len(data)) == loose
