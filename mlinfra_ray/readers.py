"""Read one split of a raw file: bytes → (parser) → the contract's columns + bookkeeping.

Reading values as text first is deliberate: the contract, not the parser, decides what a value
means. Columns missing from a file become nulls (then the contract's rules apply); columns the
contract does not know are carried in `_extra` so they can be reported and kept or dropped. Each
split is read once: the same bytes are parsed, counted (lines, for global line numbers) and hashed
(for the snapshot manifest); those per-split facts travel in `_split_info`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.bitmaps import boolean, valid
from mlinfra_ray.contract import EXTRA, EXTRA_TYPE, LINE, SOURCE, SPLIT, SPLIT_INFO
from mlinfra_ray.parsers import Undecodable, line_count, parse_csv, parse_jsonl, parse_parquet
from mlinfra_ray.settings import ContractSettings
from mlinfra_ray.sources import RawInputError, content_hash, filesystem, plan_splits

BOM = b"\xef\xbb\xbf"
TAIL = 1 << 16  # bytes read past a split's end to finish its last line
__all__ = ["Layout", "RawInputError", "layout", "read_raw_file", "read_split", "split_stats"]


@dataclass(frozen=True)
class Layout:
    """How the parsers should type each contract column (plain data, shipped to Ray tasks)."""

    columns: list[str]
    csv_infer: list[str] = field(default_factory=list)  # float columns: pyarrow parses clean ones natively
    json_text: list[str] = field(default_factory=list)  # string/timestamp columns: must be JSON strings
    json_int: list[str] = field(default_factory=list)  # int columns: a float there needs the exact path
    delimiter: str = ","

    def csv_types(self, header: list[str]) -> dict[str, pa.DataType | None]:
        # Categorical columns too are read as text: the contract encodes them (text_kernels.
        # dictionary_codes) faster than pyarrow's reader did (3 columns, 165k rows: 5 ms more)
        return {h: None if h in self.csv_infer else pa.string() for h in header}


def layout(contract: ContractSettings) -> Layout:
    cols = contract.columns
    return Layout(columns=[c.name for c in cols],
                  csv_infer=[c.name for c in cols if c.type == "float"],
                  json_text=[c.name for c in cols if c.type in ("string", "timestamp")],
                  json_int=[c.name for c in cols if c.type == "int"])


def read_split(spec: dict, lay: Layout) -> pa.Table:
    """One split as a table: contract columns (text, or native types) + bookkeeping."""
    data, lo, hi, digest = _split_bytes(spec)
    columns = lay.columns
    lines = 0
    if spec["kind"] != "parquet":
        lines = line_count(data, lo, hi)  # one pass: the manifest's line offsets and the parser's check
    try:
        table, first = _parse(spec, data, lo, hi, lay, lines)
    except Undecodable as err:  # offsets within `data`, which starts one byte before the split
        at = max(spec["start"] - 1, 0) + err.offset
        raise RawInputError(f"{spec['display']}: not valid UTF-8 at byte {at}") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise RawInputError(f"{spec['display']}: cannot be read as {spec['kind']}: {err}") from None
    lines = table.num_rows if spec["kind"] == "parquet" else lines
    info = {"split": spec["split"], "lines": lines, "blake3": digest, "bytes": spec["end"] - spec["start"]}
    return _assemble(table, spec, columns, first, info)


def split_stats(spec: dict) -> dict:
    """The same per-split facts, for a split that produced no rows (so carried none in-band)."""
    data, lo, hi, digest = _split_bytes(spec)
    lines = 0 if spec["kind"] == "parquet" else line_count(data, lo, hi)
    return {"split": spec["split"], "lines": lines, "blake3": digest, "bytes": spec["end"] - spec["start"]}


def _parse(spec: dict, data: bytes, lo: int, hi: int, lay: Layout, lines: int) -> tuple[pa.Table, int]:
    """(parsed table, line index of the first parsed line within the split)."""
    if spec["kind"] == "parquet":
        return (parse_parquet(data) if data else pa.table({})), 0
    if spec["part"] == 0 and data.startswith(BOM):
        lo += len(BOM)  # the BOM belongs to line 1; it is not part of the first column name
    if spec["kind"] == "jsonl":
        return parse_jsonl(data, lo, hi, lay.json_text, lay.json_int, lines), 0
    delimiter = lay.delimiter
    if spec["part"] > 0:
        header = _header(spec, delimiter)
        return parse_csv(data, lo, hi, header, delimiter, lay.csv_types(header), lines), 0
    start = lo
    skipped = 0
    while data[lo:lo + 1] in (b"\n", b"\r") and lo < hi:  # blank lines before the header
        skipped += data[lo:lo + 1] == b"\n"
        lo += 1
    eol = data.find(b"\n", lo, hi)
    eol = hi if eol < 0 else eol + 1
    header = _parse_header(data[lo:eol], spec["display"], delimiter)
    rest = lines - line_count(data, start, eol)  # lines after the header
    return parse_csv(data, eol, hi, header, delimiter, lay.csv_types(header), rest), skipped + 1


def _parse_header(line: bytes, display: str, delimiter: str) -> list[str]:
    try:
        text = line.removeprefix(BOM).decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise RawInputError(f"{display}: not valid UTF-8 in the header line (byte {err.start})") from None
    names = [n.strip() for n in next(csv.reader([text], delimiter=delimiter))] if text else []
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or "" in names:
        raise RawInputError(f"{display}: header has {'duplicate' if dupes else 'empty'} column names "
                            f"{dupes or ['']}")
    return names


def _header(spec: dict, delimiter: str) -> list[str]:
    fs, path = filesystem(spec["uri"])
    with fs.open_input_file(path) as fh:
        head, step = b"", 1 << 16
        while b"\n" not in head and len(head) < spec["size"]:
            head += fh.read_at(step, len(head))
    line = head.split(b"\n", 1)[0].lstrip(b"\r\n")
    return _parse_header(line, spec["display"], delimiter)


def _split_bytes(spec: dict) -> tuple[bytes, int, int, str]:
    """(bytes, lo, hi, content hash of exactly [start, end)): lines that start inside the split are
    data[lo:hi]; the last one is completed from the next split, the first partial one is skipped.

    One read covers the split and the next TAIL bytes, where its last line almost always ends
    (growing a 16 MB bytes object to finish the line copied it: ~3 ms per split)."""
    start, end, size = spec["start"], spec["end"], spec["size"]
    if end <= start:
        return b"", 0, 0, content_hash(b"")
    fs, path = filesystem(spec["uri"])
    s0 = max(start - 1, 0)  # one byte before: is the split's first byte a line start?
    span = end - s0
    with fs.open_input_file(path) as fh:
        if spec["kind"] == "parquet":
            data = fh.read_at(span, s0)
            return data, 0, len(data), content_hash(memoryview(data)[start - s0:])
        data = fh.read_at(span + min(TAIL, size - end), s0)
        digest = content_hash(memoryview(data)[start - s0:span])
        hi = span
        if end < size and data[span - 1:span] != b"\n":  # finish the split's last line
            cut = data.find(b"\n", span)
            while cut < 0 and len(data) < size - s0:  # a line longer than TAIL: read on
                data += fh.read_at(min(TAIL, size - s0 - len(data)), s0 + len(data))
                cut = data.find(b"\n", span)
            hi = len(data) if cut < 0 else cut + 1
    if start == 0:
        return data, 0, hi, digest
    nl = data.find(b"\n", 0, span)  # data[0] is the byte before the split
    lo = nl + 1 if 0 <= nl and nl + 1 < span else hi  # no line starts here: empty
    return data, lo, hi, digest


def _assemble(table: pa.Table, spec: dict, columns: list[str], first: int, info: dict) -> pa.Table:
    n = table.num_rows
    present = set(table.column_names)
    cols = {c: table.column(c) if c in present else pa.nulls(n, pa.string()) for c in columns}
    extras = [c for c in table.column_names if c not in columns and not c.startswith("_")]
    book = {
        SOURCE: pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([spec["display"]]),
                                               safe=False),  # all 0: in range
        LINE: pc.add(table.column(LINE), pa.scalar(first, pa.int32())) if n else pa.array([], pa.int32()),
        SPLIT: pa.array(np.full(n, spec["split"], np.int32)),
        SPLIT_INFO: pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)),
                                                   pa.array([json.dumps(info)]), safe=False),
        EXTRA: _extras(table, extras),
    }
    rest = {k: table.column(k) for k in ("_parse_error", "_raw_text")}
    return pa.table({**cols, **book, **rest})


def _extras(table: pa.Table, names: list[str]) -> pa.Array:
    """Unknown columns as a list of {k, v} per row (null when none). A split without any is a
    column of Arrow's null type (no buffers to store and ship, where EXTRA_TYPE nulls take ~1 MB
    per split); concatenation promotes it to EXTRA_TYPE where other splits had unknown columns."""
    n = table.num_rows
    if not names:
        return pa.nulls(n)
    values = pa.concat_arrays([_as_text(table.column(c)) for c in names])  # column-major
    order = (np.arange(len(names))[None, :] * n + np.arange(n)[:, None]).ravel()  # → row-major
    values = values.take(pa.array(order))
    present = valid(values)  # a null is not an extra value
    keys = pa.array(np.tile(np.array(names, object), n)[present], pa.string())
    items = pa.StructArray.from_arrays([keys, values.filter(boolean(present))], names=["k", "v"])
    counts = present.reshape(n, len(names)).sum(axis=1)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    mask = boolean(counts == 0)  # rows without any extra value: null, like files without extras
    return pa.ListArray.from_arrays(offsets, items, type=EXTRA_TYPE, mask=mask)


def _as_text(col: pa.ChunkedArray) -> pa.Array:
    col = col.combine_chunks()
    try:
        return col.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # nested Parquet values: JSON text
        return pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()],
                        pa.string())


def _with_extra_type(table: pa.Table) -> pa.Table:
    """`table` with its `_extra` column as EXTRA_TYPE (all null where a split had no extras)."""
    if EXTRA not in table.column_names or table.schema.field(EXTRA).type == EXTRA_TYPE:
        return table
    return table.set_column(table.schema.get_field_index(EXTRA), EXTRA, table.column(EXTRA).cast(EXTRA_TYPE))


def read_raw_file(uri: str, lay: Layout | list[str]) -> pa.Table:
    """A whole file read split by split, with 1-based physical line numbers (for tests and tools).
    A plain column list reads every column as text."""
    from mlinfra_ray.sources import list_raw_files

    lay = lay if isinstance(lay, Layout) else Layout(columns=list(lay), json_text=list(lay))
    specs = plan_splits(list_raw_files(uri))
    tables = [read_split(s, lay) for s in specs]
    offsets = np.cumsum([0] + [json.loads(t.column(SPLIT_INFO).chunk(0).dictionary[0].as_py())["lines"]
                               if t.num_rows else split_stats(s)["lines"] for t, s in zip(tables, specs,
                                                                                           strict=True)])
    fixed = [_with_extra_type(t.set_column(t.schema.get_field_index(LINE), LINE,
                                          pc.add(t.column(LINE).cast(pa.int64()), int(offsets[i]) + 1)))
             for i, t in enumerate(tables)]
    if len({t.schema for t in fixed}) > 1:  # splits typed differently (text vs native): show as text
        mixed = {f.name for t in fixed for f in t.schema if f.type != fixed[0].schema.field(f.name).type}
        fixed = [t.cast(pa.schema([pa.field(f.name, pa.string()) if f.name in mixed else f for f in t.schema]))
                 for t in fixed]
    return pa.concat_tables(fixed) if fixed else pa.table({})
