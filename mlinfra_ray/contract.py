"""The data contract applied at Arrow speed: coerce raw columns to typed ones, or say why not.

Input batches hold every contract column as strings (CSV/JSON text) or as native Arrow types
(Parquet), plus bookkeeping columns from the readers. Output batches hold the typed contract
columns, the bookkeeping columns, `_reasons` (null for a clean row, else ";"-joined codes such as
`type:amount` or `enum:channel`) and `_raw` (null for a clean row, else the row's original values
as JSON, or the unparseable line itself); both are dictionary-encoded strings. Every check is a
pyarrow compute kernel over a whole column; reasons and raw values are only built for the failing
rows, so a clean row costs no Python.
Dictionary-encoded input (Parquet dictionaries; categorical text, encoded here first by a
compiled pass) is checked once per distinct value. Categorical columns (`categorical`) stay
dictionary-encoded in the output batches: an index per row instead of a copied string (~3 MB
less to store and ship per 16 MB split). `Routed` decodes clean rows to the contract's types
(`arrow_schema`) when it gathers them.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.bitmaps import boolean, bools, valid
from mlinfra_ray.contract_rows import raw_for, reasons_for, scatter
from mlinfra_ray.contract_spec import ContractError, column, validate_contract
from mlinfra_ray.contract_time import ARROW_TYPES, Check, parse_timestamp, set_nulls
from mlinfra_ray.settings import ColumnSpec, ContractSettings

__all__ = ["ARROW_TYPES", "ContractError", "apply_contract", "arrow_schema", "categorical", "coerce_column",
           "column", "only_rejected_lines", "set_nulls", "validate_contract"]

SOURCE, LINE, SPLIT, PARSE_ERROR, RAW_TEXT = "_source_file", "_line", "_split", "_parse_error", "_raw_text"
SPLIT_INFO, EXTRA = "_split_info", "_extra"
REASONS, RAW = "_reasons", "_raw"
PASSTHROUGH = (SOURCE, LINE, SPLIT, SPLIT_INFO, EXTRA)  # reader bookkeeping kept on every row
EXTRA_TYPE = pa.list_(pa.struct([("k", pa.string()), ("v", pa.string())]))  # unknown columns, per row
FLOAT_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"  # exactly what Arrow's casts parse
INT_RE = r"^-?\d+$"  # (text_kernels.parse_number reads these grammars; "+5" is a float, not an int)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
TRUE, FALSE = ["true", "1", "yes", "t", "y"], ["false", "0", "no", "f", "n"]


def arrow_schema(contract: ContractSettings) -> pa.Schema:
    """Schema of clean rows: the contract's columns with their Arrow types."""
    return pa.schema([(c.name, ARROW_TYPES[c.type]) for c in contract.columns])


def categorical(col: ColumnSpec) -> bool:
    """Enum columns, and text the contract case-normalizes (codes like country or currency), have
    few distinct values: they are dictionary-encoded before the checks, so each distinct value is
    checked once, and validated batches keep them so. (Keys and free text would only pay the
    hashing.)"""
    cased = any(step in ("lower", "upper") for step in col.normalize)
    return col.type == "string" and (col.allowed is not None or cased)


def apply_contract(batch: pa.Table, contract: ContractSettings) -> pa.Table:
    """Typed contract columns + reader bookkeeping + `_reasons` + `_raw` for one batch."""
    n = batch.num_rows
    parse = _combined(batch.column(PARSE_ERROR)) if PARSE_ERROR in batch.column_names else None
    keep = {k: batch.column(k) for k in PASSTHROUGH if k in batch.column_names}
    if only_rejected_lines(batch):  # no values to check; the parser's reason and the line itself
        everything = np.arange(n)
        typed = {c.name: pa.nulls(n, _output_type(c)) for c in contract.columns}
        return pa.table({**typed, **keep, REASONS: scatter(everything, parse, n),
                         RAW: scatter(everything, _combined(batch.column(RAW_TEXT)), n)})
    typed, checks = {}, []
    for col in contract.columns:
        raw = _raw_column(batch, col.name)
        values, col_checks = _coerce_categorical(raw, col) if categorical(col) else coerce_column(raw, col)
        typed[col.name] = values
        checks.extend(col_checks)
    rows = np.flatnonzero(_any_fails(checks, n, parse))
    reasons = reasons_for(rows, checks, parse)
    raw = raw_for(rows, {c.name: _raw_column(batch, c.name) for c in contract.columns},
                  _combined(batch.column(RAW_TEXT)) if RAW_TEXT in batch.column_names else None)
    return pa.table({**typed, **keep, REASONS: scatter(rows, reasons, n), RAW: scatter(rows, raw, n)})


def only_rejected_lines(batch: pa.Table | pa.RecordBatch) -> bool:
    """Does `batch` hold only lines the parser rejected? (Readers give them a batch of their own.)"""
    return PARSE_ERROR in batch.column_names and batch.num_rows > 0 and \
        batch.column(PARSE_ERROR).null_count == 0


def _raw_column(batch: pa.Table, name: str) -> pa.Array:
    if name not in batch.column_names:  # an older file without this column: null, then the rules
        return pa.nulls(batch.num_rows, pa.string())
    return _combined(batch.column(name))


def _combined(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):  # one chunk: no copy (combine_chunks would copy)
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def coerce_column(raw: pa.Array, col: ColumnSpec) -> tuple[pa.Array, list[Check]]:
    """Normalize, cast and check one column. Returns typed values and (fails, reason) checks."""
    raw = _combined(raw)
    if pa.types.is_dictionary(raw.type):
        return _coerce_dictionary(raw, col)
    if not (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type) or pa.types.is_null(raw.type)):
        return _coerce_native(raw, col)
    text, present = _blank_to_null(_normalize(raw.cast(pa.string()), col.normalize))
    checks: list[Check] = []
    if not col.nullable:
        checks.append((pc.invert(present), f"missing:{col.name}"))
    values, parsed, extra = _cast(text, col)
    checks.append((pc.and_(present, pc.invert(parsed)), f"{_kind(col)}:{col.name}"))
    checks.extend(extra)
    if col.regex is not None:
        from mlinfra_ray.text_kernels import regex_match

        ok = pc.fill_null(regex_match(text, col.regex), True)
        checks.append((pc.invert(ok), f"regex:{col.name}"))
    return values, checks + _value_checks(values, parsed, col)


def _blank_to_null(text: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(`text` with "" as null — missing, like null — and its present mask), read off the offsets
    in one numpy pass, one validity bitmap shared by both (Arrow kernels: ~0.5 ms per column)."""
    n = len(text)
    if text.offset or not n or not pa.types.is_string(text.type):
        text = set_nulls(text, pc.greater(pc.binary_length(text), 0))
        return text, pc.is_valid(text)
    off = np.frombuffer(text.buffers()[1], np.int32, n + 1)
    keep = off[1:] > off[:-1]
    if text.null_count:
        keep &= valid(text)
    present = boolean(keep)
    return pa.Array.from_buffers(text.type, n, [present.buffers()[1], *text.buffers()[1:]]), present


def _coerce_dictionary(raw: pa.DictionaryArray, col: ColumnSpec,
                       decode: bool = True) -> tuple[pa.Array, list[Check]]:
    """Check each distinct value once, then map the results to the rows through the indices
    (only checks that some distinct value fails; the others cannot fire on any row). `decode`:
    typed values per row; else dictionary-encoded (the checked dictionary, the same indices)."""
    values, checks = coerce_column(raw.dictionary, col)
    index = raw.indices
    fired = [(mask, code) for mask, code in checks if mask.true_count]
    rows = []
    if fired:  # per distinct value → per row: a numpy gather (Arrow's take works bit by bit)
        at, ok = index.fill_null(0).to_numpy(), valid(index)
        rows = [(boolean(bools(mask)[at] & ok), code) for mask, code in fired]
    if not col.nullable and raw.null_count:
        rows.append((pc.is_null(index), f"missing:{col.name}"))
    return (values.take(index) if decode else _encoded(index, values)), rows


def _coerce_categorical(raw: pa.Array, col: ColumnSpec) -> tuple[pa.DictionaryArray, list[Check]]:
    """`coerce_column` for a categorical column, dictionary-encoded with int32 indices whatever
    the input (every split's batches must share one schema: CSV, JSON and Parquet alike). Text
    is encoded first, so each distinct value is checked once; a batch with more distinct values
    than a category column should have is checked row by row, then encoded."""
    from mlinfra_ray.text_kernels import dictionary_codes

    raw = _combined(raw)
    if pa.types.is_string(raw.type) and (coded := dictionary_codes(raw)) is not None:
        raw = coded
    if pa.types.is_dictionary(raw.type):
        return _coerce_dictionary(raw, col, decode=False)
    values, checks = coerce_column(raw, col)
    coded = pc.dictionary_encode(values)
    return _encoded(coded.indices, coded.dictionary), checks


def _encoded(index: pa.Array, values: pa.Array) -> pa.DictionaryArray:
    """int32 `index` into `values`; a row whose value is null (a blank after trimming) gets a
    null index, so the row itself is null (Arrow's null checks read the indices, not values).
    The dictionary itself holds no null: Arrow cannot unify dictionaries with nulls, which every
    take across splits does (it failed gathering clean rows once a split had a blank category)."""
    index = index.cast(pa.int32())
    if values.null_count:
        index = set_nulls(index, pc.fill_null(pc.is_valid(values).take(index), False))
        values = values.fill_null("")
    # safe=False: the indices come from a dictionary over these very values (in range), and
    # checking all of them again cost ~0.07 ms per column and split
    return pa.DictionaryArray.from_arrays(index, values.cast(pa.string()), safe=False)


def _output_type(col: ColumnSpec) -> pa.DataType:
    """A validated batch's type for the column (clean rows get `ARROW_TYPES`, see `Routed`)."""
    return pa.dictionary(pa.int32(), pa.string()) if categorical(col) else ARROW_TYPES[col.type]


def _coerce_native(raw: pa.Array, col: ColumnSpec) -> tuple[pa.Array, list[Check]]:
    """Typed input (Parquet): timestamps keep their instant, numbers are cast, never re-parsed."""
    if col.type == "timestamp" and pa.types.is_timestamp(raw.type):
        values = raw if raw.type.tz else pc.assume_timezone(raw, col.timezone)
        values = values.cast(ARROW_TYPES["timestamp"])
    elif (col.type in ("float", "int") and (pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type))) \
            or (col.type == "bool" and pa.types.is_boolean(raw.type)):
        try:
            values = raw.cast(ARROW_TYPES[col.type])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. 2.5 into an int column
            return coerce_column(raw.cast(pa.string()), col)
    else:
        return coerce_column(raw.cast(pa.string()), col)
    checks: list[Check] = [] if col.nullable else [(pc.is_null(values), f"missing:{col.name}")]
    if pa.types.is_floating(values.type):  # NaN/inf are not numbers a contract can range-check
        finite = pc.fill_null(pc.is_finite(values), True)
        if finite.false_count:
            checks.append((pc.invert(finite), f"type:{col.name}"))
            values = pc.if_else(finite, values, pa.scalar(None, values.type))
    return values, checks + _value_checks(values, pc.is_valid(values), col)


def _value_checks(values: pa.Array, parsed: pa.Array, col: ColumnSpec) -> list[Check]:
    checks: list[Check] = []
    if col.allowed is not None:
        ok = pc.is_in(values, value_set=pa.array(col.allowed).cast(ARROW_TYPES[col.type]))
        checks.append((pc.and_(parsed, pc.invert(ok)), f"enum:{col.name}"))
    if col.min is not None:
        checks.append((pc.fill_null(pc.less(values, _bound(col.min, values, math.ceil)), False),
                       f"range:{col.name}"))
    if col.max is not None:
        checks.append((pc.fill_null(pc.greater(values, _bound(col.max, values, math.floor)), False),
                       f"range:{col.name}"))
    return checks


def _bound(limit: float, values: pa.Array, to_int) -> float | pa.Scalar:
    """A range limit in the int64 values' own type: comparing them with a float makes Arrow cast
    the column to double, which fails beyond 2**53. For ints, v < 0.5 is v < ceil(0.5), v > 2.5 is
    v > floor(2.5), and a limit past int64 (or infinite) is int64's end, which no value passes."""
    if not pa.types.is_int64(values.type) or math.isnan(limit):
        return limit
    bound = int(to_int(limit)) if math.isfinite(limit) else (INT64_MAX if limit > 0 else INT64_MIN)
    return pa.scalar(min(max(bound, INT64_MIN), INT64_MAX), pa.int64())


def _kind(col: ColumnSpec) -> str:
    return "format" if col.type == "timestamp" else "type"


def _normalize(text: pa.Array, steps: list[str]) -> pa.Array:
    from mlinfra_ray.text_kernels import edge_bytes

    for step in steps:
        if step == "trim" and not edge_bytes(text):  # two bytes per value, in Arrow's buffers
            continue  # the usual case: trimming would copy every value for nothing
        text = {"trim": pc.utf8_trim_whitespace, "lower": pc.utf8_lower,
                "upper": pc.utf8_upper}[step](text)
    return text


def _cast(text: pa.Array, col: ColumnSpec) -> tuple[pa.Array, pa.Array, list[Check]]:
    """(typed values, parsed-ok mask, extra checks); bad values become null, never an exception."""
    if col.type == "string":
        return text, pc.is_valid(text), []
    if col.type in ("float", "int"):  # Arrow's number grammar, value by value, in one pass
        from mlinfra_ray.text_kernels import parse_number

        # Spaces and tabs around a number are ignored: a clean CSV float column is typed by
        # pyarrow's reader, which strips them, and a value must mean the same whichever way its
        # split is read (" 1.5" was clean next to numbers, type:amount next to garbage).
        values, ok = parse_number(text, floating=col.type == "float", padded=True)
        if col.type == "float" and values.null_count < len(values):  # "nan", "1e999": not usable numbers
            finite = pc.fill_null(pc.is_finite(values), False)
            if not pc.all(pc.or_(finite, pc.is_null(values))).as_py():
                ok = pc.and_(ok, finite)
                values = pc.if_else(ok, values, pa.scalar(None, pa.float64()))
        return values, ok, []
    if col.type == "bool":
        lowered = pc.utf8_lower(text)
        is_true, is_false = pc.is_in(lowered, pa.array(TRUE)), pc.is_in(lowered, pa.array(FALSE))
        ok = pc.fill_null(pc.or_(is_true, is_false), False)
        return pc.if_else(ok, is_true, pa.scalar(None, pa.bool_())), ok, []
    return parse_timestamp(text, col)


def _any_fails(checks: list[Check], n: int, parse: pa.Array | None) -> np.ndarray:
    """Per row: does any check fail (or did the parser reject the line)?"""
    bad = np.zeros(n, np.bool_)
    for mask, _ in checks:
        if mask.true_count:  # most checks never fire: skip them
            bad |= bools(mask)
    if parse is not None and parse.null_count < n:
        bad |= valid(parse)
    return bad
