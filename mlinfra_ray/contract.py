"""The data contract applied at Arrow speed: coerce string columns to typed ones, or say why not.

Input batches hold every contract column as strings (as read from CSV/JSON), plus bookkeeping
columns. Output batches hold typed contract columns plus `_reasons` ("" for a clean row, else
";"-joined codes such as `type:amount` or `enum:channel`) and `_raw` (the row's original values as
JSON, so a quarantined row can be inspected and replayed). All checks are pyarrow compute kernels
over whole columns; no Python loop per row.
"""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.settings import ColumnSpec, ContractSettings

SOURCE, LINE, PARSE_ERROR, RAW_TEXT = "_source_file", "_line", "_parse_error", "_raw_text"
REASONS, RAW = "_reasons", "_raw"
FLOAT_RE = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
INT_RE = r"^[+-]?\d+$"
TRUE, FALSE = ["true", "1", "yes", "t", "y"], ["false", "0", "no", "f", "n"]
ARROW_TYPES = {"string": pa.string(), "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(),
               "timestamp": pa.timestamp("us", tz="UTC")}


class ContractError(ValueError):
    """The contract itself is invalid; the message names the offending key."""


def validate_contract(contract: ContractSettings) -> None:
    """Fail at start-up, naming the key, rather than mid-pipeline."""
    names = [c.name for c in contract.columns]
    if len(set(names)) != len(names):
        raise ContractError(f"contract.columns: duplicate column names in {names}")
    for key in ("event_time", "label", "dedup_key"):
        value = getattr(contract, key)
        if value is not None and value not in names:
            raise ContractError(f"contract.{key}: {value!r} is not a declared column")
    for i, key in enumerate(contract.entity_keys):
        if key not in names:
            raise ContractError(f"contract.entity_keys[{i}]: {key!r} is not a declared column")
    if not 0 <= contract.max_quarantine_fraction <= 1:
        raise ContractError("contract.max_quarantine_fraction: must be within [0, 1]")
    for i, col in enumerate(contract.columns):
        _validate_column(col, f"contract.columns[{i}]")
    if column(contract, contract.event_time).type != "timestamp":
        raise ContractError(f"contract.event_time: column {contract.event_time!r} must be a timestamp")


def _validate_column(col: ColumnSpec, where: str) -> None:
    if col.type == "timestamp" and not col.formats:
        raise ContractError(f"{where}.formats: a timestamp column needs its accepted formats")
    if col.formats and col.type != "timestamp":
        raise ContractError(f"{where}.formats: only timestamp columns take formats")
    if col.regex is not None:
        try:
            re.compile(col.regex)
        except re.error as err:
            raise ContractError(f"{where}.regex: {err}") from err
    if col.min is not None and col.max is not None and col.min > col.max:
        raise ContractError(f"{where}: min {col.min} is above max {col.max}")
    try:
        pa.array([0], pa.timestamp("s")).cast(pa.timestamp("s", tz=col.timezone))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ContractError(f"{where}.timezone: unknown timezone {col.timezone!r}") from err


def column(contract: ContractSettings, name: str) -> ColumnSpec:
    return next(c for c in contract.columns if c.name == name)


def arrow_schema(contract: ContractSettings) -> pa.Schema:
    """Schema of clean rows: the contract's columns with their Arrow types."""
    return pa.schema([(c.name, ARROW_TYPES[c.type]) for c in contract.columns])


def apply_contract(batch: pa.Table, contract: ContractSettings) -> pa.Table:
    """Typed contract columns + `_reasons` + `_raw` for a batch of string columns."""
    typed, problems = {}, []
    for col in contract.columns:
        values, checks = coerce_column(batch.column(col.name), col)
        typed[col.name] = values
        problems.extend(checks)
    reasons = _join_reasons(problems, batch.num_rows)
    if PARSE_ERROR in batch.column_names:  # the parser rejected the line: that is the only reason
        parse = batch.column(PARSE_ERROR)
        reasons = pc.if_else(pc.is_valid(parse), parse, reasons)
    raw_cols = [c.name for c in contract.columns]
    raw = pa.array([json.dumps(r) for r in batch.select(raw_cols).to_pylist()], pa.string())
    if RAW_TEXT in batch.column_names:  # unparseable lines keep their text, not empty fields
        raw = pc.if_else(pc.is_valid(batch.column(RAW_TEXT)), batch.column(RAW_TEXT), raw)
    keep = {k: batch.column(k) for k in (SOURCE, LINE) if k in batch.column_names}
    return pa.table({**typed, **keep, REASONS: reasons, RAW: raw})


def coerce_column(raw: pa.ChunkedArray | pa.Array, col: ColumnSpec) -> tuple[pa.Array, list]:
    """Normalize, cast and check one column. Returns typed values and (mask, reason) checks."""
    text = _normalize(pc.cast(raw, pa.string()), col.normalize)
    present = pc.fill_null(pc.not_equal(text, ""), False)
    text = pc.if_else(present, text, pa.scalar(None, pa.string()))
    checks = []
    if not col.nullable:
        checks.append((pc.invert(present), f"missing:{col.name}"))
    values, parsed = _cast(text, col)
    checks.append((pc.and_(present, pc.invert(parsed)), f"{_kind(col)}:{col.name}"))
    if col.allowed is not None:
        ok = pc.is_in(values, value_set=pa.array(col.allowed, ARROW_TYPES[col.type]))
        checks.append((pc.and_(parsed, pc.invert(ok)), f"enum:{col.name}"))
    if col.min is not None:
        checks.append((pc.fill_null(pc.less(values, col.min), False), f"range:{col.name}"))
    if col.max is not None:
        checks.append((pc.fill_null(pc.greater(values, col.max), False), f"range:{col.name}"))
    if col.regex is not None:
        ok = pc.fill_null(pc.match_substring_regex(text, col.regex), True)
        checks.append((pc.invert(ok), f"regex:{col.name}"))
    return values, checks


def _kind(col: ColumnSpec) -> str:
    return "format" if col.type == "timestamp" else "type"


def _normalize(text: pa.Array, steps: list[str]) -> pa.Array:
    for step in steps:
        text = {"trim": pc.utf8_trim_whitespace, "lower": pc.utf8_lower,
                "upper": pc.utf8_upper}[step](text)
    return text


def _cast(text: pa.Array, col: ColumnSpec) -> tuple[pa.Array, pa.Array]:
    """(typed values, parsed-ok mask); unparseable values become null, never an exception."""
    if col.type == "string":
        return text, pc.is_valid(text)
    if col.type in ("float", "int"):
        ok = pc.fill_null(pc.match_substring_regex(text, FLOAT_RE if col.type == "float" else INT_RE),
                          False)
        clean = pc.if_else(ok, text, pa.scalar(None, pa.string()))
        return pc.cast(clean, ARROW_TYPES[col.type]), ok
    if col.type == "bool":
        lowered = pc.utf8_lower(text)
        is_true, is_false = pc.is_in(lowered, pa.array(TRUE)), pc.is_in(lowered, pa.array(FALSE))
        ok = pc.fill_null(pc.or_(is_true, is_false), False)
        return pc.if_else(ok, is_true, pa.scalar(None, pa.bool_())), ok
    return _parse_timestamp(text, col)


def _parse_timestamp(text: pa.Array, col: ColumnSpec) -> tuple[pa.Array, pa.Array]:
    """First declared format that parses wins; formats are tried in the contract's order."""
    out_type = ARROW_TYPES["timestamp"]
    result = pa.nulls(len(text), out_type)
    for fmt in col.formats:
        if fmt in ("epoch_s", "epoch_ms"):
            digits = r"^\d{9,10}$" if fmt == "epoch_s" else r"^\d{12,13}$"
            ok = pc.fill_null(pc.match_substring_regex(text, digits), False)
            ints = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.int64())
            scale = 1_000_000 if fmt == "epoch_s" else 1_000
            parsed = pc.multiply(ints, scale).cast(pa.timestamp("us")).cast(out_type)
        else:
            naive = pc.strptime(text, format=fmt, unit="us", error_is_null=True)
            if naive.type.tz is None:
                naive = pc.assume_timezone(naive, col.timezone)
            parsed = naive.cast(out_type)
        result = pc.coalesce(result, parsed)
    return result, pc.is_valid(result)


def _join_reasons(problems: list, n: int) -> pa.Array:
    reasons = pa.array([""] * n, pa.string())
    for mask, code in problems:
        tagged = pc.if_else(pc.fill_null(mask, False), pa.scalar(code + ";"), pa.scalar(""))
        reasons = pc.binary_join_element_wise(reasons, tagged, "")
    return pc.utf8_rtrim(reasons, characters=";")
