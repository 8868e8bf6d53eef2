"""Raw readers keep every line: parser rejects come back with their text and line number."""

import pytest

from mlinfra_ray.contract import LINE, PARSE_ERROR, RAW_TEXT
from mlinfra_ray.readers import RawInputError, list_raw_files, read_raw_file

COLS = ["a", "b", "c"]


def test_csv_bad_rows_are_kept_with_line_numbers(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a,b\n1,2\n3\n4,5,6\n7,8\n")
    t = read_raw_file(str(f), COLS).sort_by(LINE)
    assert t.column(LINE).to_pylist() == [2, 3, 4, 5]
    assert t.column("a").to_pylist() == ["1", None, None, "7"]
    assert t.column("c").to_pylist() == [None] * 4  # missing column → null, not an error
    errors = t.column(PARSE_ERROR).to_pylist()
    assert errors[0] is None and errors[1].startswith("parse:field_count")
    assert t.column(RAW_TEXT).to_pylist()[2] == "4,5,6"


def test_csv_with_bom_reads_the_first_column(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")
    assert read_raw_file(str(f), COLS).column("a").to_pylist() == ["1"]


def test_jsonl_malformed_line_is_kept(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1, "b": "x"}\n{"a": \n\n{"c": 2.5, "extra": true}\n')
    t = read_raw_file(str(f), COLS)
    assert t.column(LINE).to_pylist() == [1, 2, 4]
    assert t.column("a").to_pylist() == ["1", None, None]
    assert t.column("c").to_pylist() == [None, None, "2.5"]
    assert t.column(PARSE_ERROR).to_pylist() == [None, "parse:json", None]


def test_undecodable_file_names_the_file(tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("a,b\ncafé,1\n".encode("latin-1"))
    with pytest.raises(RawInputError, match="latin1.csv"):
        read_raw_file(str(f), COLS)


def test_list_raw_files_is_sorted_and_filtered(tmp_path):
    for name in ["b.csv", "a.jsonl", "notes.txt", "c.parquet"]:
        (tmp_path / name).write_text("")
    assert [p.rsplit("/", 1)[1] for p in list_raw_files(str(tmp_path))] == ["a.jsonl", "b.csv", "c.parquet"]
