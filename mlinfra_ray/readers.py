"""Raw file readers: every file becomes a table of strings over the contract's columns.

Reading everything as text first is deliberate: the contract, not the parser, decides what a value
means, and a row the parser rejects (wrong field count, unterminated quote, malformed JSON) is kept
with its raw text and line number so it can be quarantined instead of silently skipped.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlinfra_ray.contract import LINE, PARSE_ERROR, RAW_TEXT, SOURCE

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
            ".parquet": "parquet"}


class RawInputError(ValueError):
    """A raw input that cannot be read at all (bad encoding, unknown kind); names the file."""


def list_raw_files(root: str) -> list[str]:
    """Data files under a local folder or URI, in a stable order (so snapshots hash stably)."""
    fs, path = _filesystem(root)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        infos = [info]
    else:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos
                   if i.type == pafs.FileType.File and Path(i.path).suffix.lower() in SUFFIXES)
    prefix = root.split("://", 1)[0] + "://" if "://" in root else ""
    return [prefix + f for f in files]


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def read_bytes(uri: str) -> bytes:
    fs, path = _filesystem(uri)
    with fs.open_input_stream(path) as fh:
        return fh.read()


def read_raw_file(uri: str, columns: list[str]) -> pa.Table:
    """One file as strings: contract `columns` + `_source_file`, `_line`, `_parse_error`."""
    kind = SUFFIXES.get(Path(uri).suffix.lower())
    data = read_bytes(uri)
    if kind == "parquet":
        table = pq.read_table(io.BytesIO(data))
        rows = table.num_rows
        cols = {c: _as_strings(table.column(c)) if c in table.column_names else pa.nulls(rows, pa.string())
                for c in columns}
        lines = pa.array(range(1, rows + 1), pa.int64())
        return _finish(cols, uri, lines, pa.nulls(rows, pa.string()), pa.nulls(rows, pa.string()))
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RawInputError(f"{uri}: not valid UTF-8 at byte {err.start}") from err
    if kind == "csv":
        return _read_csv(data, uri, columns)
    if kind == "jsonl":
        return _read_jsonl(data, uri, columns)
    raise RawInputError(f"{uri}: unknown file kind (expected one of {sorted(SUFFIXES)})")


def _as_strings(col: pa.ChunkedArray) -> pa.Array:
    if pa.types.is_timestamp(col.type):  # ISO text, which the contract declares as a format
        col = col.cast(pa.timestamp("s", tz=col.type.tz)).cast(pa.string())
    return col.cast(pa.string()).combine_chunks()


def _read_csv(data: bytes, uri: str, columns: list[str]) -> pa.Table:
    header = data.split(b"\n", 1)[0].decode("utf-8").strip().split(",")
    bad: list[pacsv.InvalidRow] = []

    def keep_bad(row: pacsv.InvalidRow) -> str:
        bad.append(row)
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(use_threads=False),  # physical row numbers stay known
        parse_options=pacsv.ParseOptions(invalid_row_handler=keep_bad),
        convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                             strings_can_be_null=False),
    )
    bad_lines = {r.number for r in bad}
    lines, line = [], 2  # line 1 is the header
    for _ in range(table.num_rows):
        while line in bad_lines:
            line += 1
        lines.append(line)
        line += 1
    n_bad = len(bad)
    cols = {c: pa.concat_arrays([_column_or_null(table, c), pa.nulls(n_bad, pa.string())])
            for c in columns}
    reasons = [None] * table.num_rows + [
        f"parse:field_count({r.actual_columns}/{r.expected_columns})" for r in bad]
    texts = [None] * table.num_rows + [r.text for r in bad]
    line_arr = pa.array(lines + [r.number if r.number is not None else -1 for r in bad], pa.int64())
    return _finish(cols, uri, line_arr, pa.array(reasons, pa.string()), pa.array(texts, pa.string()))


def _column_or_null(table: pa.Table, name: str) -> pa.Array:
    if name in table.column_names:
        return table.column(name).combine_chunks()
    return pa.nulls(table.num_rows, pa.string())


def _read_jsonl(data: bytes, uri: str, columns: list[str]) -> pa.Table:
    records: dict[str, list] = {c: [] for c in columns}
    lines, errors, texts = [], [], []
    for number, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            error = None
        except ValueError:
            obj, error = {}, "parse:json"
        for c in columns:
            records[c].append(_json_text(obj.get(c)))
        lines.append(number)
        errors.append(error)
        texts.append(text if error else None)
    cols = {c: pa.array(v, pa.string()) for c, v in records.items()}
    return _finish(cols, uri, pa.array(lines, pa.int64()), pa.array(errors, pa.string()),
                   pa.array(texts, pa.string()))


def _json_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)


def _finish(cols: dict[str, pa.Array], uri: str, lines: pa.Array, errors: pa.Array,
            raw_text: pa.Array) -> pa.Table:
    """Contract columns + bookkeeping; `raw_text` holds the line itself where parsing failed."""
    source = pa.array([uri] * len(lines), pa.string())
    return pa.table({**cols, SOURCE: source, LINE: lines, PARSE_ERROR: errors, RAW_TEXT: raw_text})
