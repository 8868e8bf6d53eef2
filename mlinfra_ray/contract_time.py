"""Timestamp parsing for the contract: only the declared formats, never a guess.

Epoch formats go first (one digit test; the contract rejects strptime formats that could
also read a bare number, so the order cannot change a result), then strptime formats in the
declared order: the first format that reads a value wins.

Two implementations with one meaning: `parse_arrow` is Arrow's (a digit test, then one strptime
pass per format over the still-unparsed values); `parse_timestamp` first runs a compiled pass
(mlinfra_ray/text_kernels.py) that settles the usual values — epochs, zero-padded values of a
format, values a format cannot read because they lack one of its literals — and gives the rest
to the same Arrow loop. A property test holds them equal (tests/unit/test_text_kernels.py).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.bitmaps import boolean, masked

ARROW_TYPES = {"string": pa.string(), "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(),
               "timestamp": pa.timestamp("us", tz="UTC")}
EPOCH_DIGITS = {"epoch_s": (9, 10, 1_000_000), "epoch_ms": (12, 13, 1_000)}  # min, max digits, to µs
Check = tuple[pa.Array, str]  # (row fails, reason code)


def set_nulls(arr: pa.Array, keep: pa.Array) -> pa.Array:
    """`arr` with nulls where `keep` is false or null: zero-copy on the value buffers."""
    keep = pc.and_kleene(pc.fill_null(keep, False), pc.is_valid(arr))
    if keep.offset or arr.offset or not pa.types.is_string(arr.type):
        return pc.if_else(keep, arr, pa.scalar(None, arr.type))
    return pa.Array.from_buffers(arr.type, len(arr), [keep.buffers()[1], *arr.buffers()[1:]])


def parse_timestamp(text: pa.Array, col) -> tuple[pa.Array, pa.Array, list[Check]]:
    """(UTC timestamps, parsed mask, extra checks) for one column of text.

    Local wall-clock times that a DST change makes ambiguous or nonexistent are not resolved by
    guessing: they fail with `ambiguous:<column>`.
    """
    from mlinfra_ray.text_kernels import ASK, PARSED, first_format

    formats = [f for f in col.formats if f not in EPOCH_DIGITS]
    micros, which, state = first_format(text, [EPOCH_DIGITS[f] for f in col.formats if f in EPOCH_DIGITS],
                                        formats)
    parsed = state == PARSED
    local_formats = [k for k, f in enumerate(formats) if not _utc(f, col.timezone)]
    local = parsed & np.isin(which, local_formats)  # epochs (which == -1) are UTC already
    result = masked(micros, pa.timestamp("us"), parsed & ~local).cast(ARROW_TYPES["timestamp"])
    ambiguous = None
    for k in np.unique(which[local]):  # formats read as local time in the contract's timezone
        naive = masked(micros, pa.timestamp("us"), local & (which == k))
        utc, amb = _localize(naive, formats[k], col.timezone)
        result = pc.coalesce(result, utc)
        ambiguous = _either(ambiguous, amb)
    ask = state == ASK
    if ask.any():  # values only strptime can judge (unpadded fields, odd spacing, other directives)
        rest, amb = _parse_each(set_nulls(text, boolean(ask)), col)
        result = pc.coalesce(result, rest)
        ambiguous = _either(ambiguous, amb)
    return _checked(result, ambiguous, col)


def parse_arrow(text: pa.Array, col) -> tuple[pa.Array, pa.Array, list[Check]]:
    """`parse_timestamp` with Arrow's kernels only (the reference the compiled pass must equal)."""
    return _checked(*_parse_each(text, col), col)


def _parse_each(text: pa.Array, col) -> tuple[pa.Array, pa.Array | None]:
    """(UTC timestamps, ambiguous mask or None): epochs, then one strptime pass per format."""
    epochs = [f for f in col.formats if f in EPOCH_DIGITS]
    result = _parse_epochs(text, epochs) if epochs else pa.nulls(len(text), ARROW_TYPES["timestamp"])
    remaining, ambiguous = set_nulls(text, pc.is_null(result)), None
    for fmt in (f for f in col.formats if f not in EPOCH_DIGITS):
        if remaining.null_count == len(remaining):
            break
        naive = pc.strptime(remaining, format=fmt, unit="us", error_is_null=True)
        parsed, amb = _localize(naive, fmt, col.timezone)
        result = pc.coalesce(result, parsed)
        remaining = set_nulls(remaining, pc.is_null(parsed))
        ambiguous = _either(ambiguous, amb)
    return result, ambiguous


def _checked(result: pa.Array, ambiguous: pa.Array | None, col) -> tuple[pa.Array, pa.Array, list[Check]]:
    checks: list[Check] = []
    recognized = pc.is_valid(result)  # a format matched (even if the local time is ambiguous)
    if ambiguous is not None and ambiguous.true_count:
        checks.append((ambiguous, f"ambiguous:{col.name}"))
        result = pc.if_else(ambiguous, pa.scalar(None, result.type), result)
    return result, recognized, checks


def _either(a: pa.Array | None, b: pa.Array | None) -> pa.Array | None:
    return b if a is None else a if b is None else pc.or_(a, b)


def _parse_epochs(text: pa.Array, formats: list[str]) -> pa.Array:
    """Digits only, and the digit count picks the unit (9-10: seconds, 12-13: milliseconds)."""
    size, digits = pc.binary_length(text), pc.ascii_is_decimal(text)
    scale = pa.nulls(len(text), pa.int64())
    for fmt in formats:
        lo, hi, factor = EPOCH_DIGITS[fmt]
        ok = pc.and_(digits, pc.and_(pc.greater_equal(size, lo), pc.less_equal(size, hi)))
        scale = pc.if_else(pc.fill_null(ok, False), pa.scalar(factor, pa.int64()), scale)
    ints = set_nulls(text, pc.is_valid(scale)).cast(pa.int64())
    return pc.multiply(ints, scale).cast(pa.timestamp("us")).cast(ARROW_TYPES["timestamp"])


def _utc(fmt: str, timezone: str) -> bool:
    """Does the format read an instant or UTC wall-clock time (so no local-time rules apply)?"""
    return "%z" in fmt or fmt.endswith("Z") or timezone == "UTC"


def _localize(naive: pa.Array, fmt: str, timezone: str) -> tuple[pa.Array, pa.Array | None]:
    """(UTC timestamps, ambiguous-local-time mask or None) for what one format parsed."""
    out_type = ARROW_TYPES["timestamp"]
    if naive.type.tz is not None:  # the format has %z: an instant
        return naive.cast(out_type), None
    if _utc(fmt, timezone):  # a literal Z, or wall-clock time in UTC
        return naive.cast(pa.timestamp("us")).cast(out_type), None
    early = pc.assume_timezone(naive, timezone=timezone, ambiguous="earliest", nonexistent="earliest")
    late = pc.assume_timezone(naive, timezone=timezone, ambiguous="latest", nonexistent="latest")
    return early.cast(out_type), pc.fill_null(pc.not_equal(early, late), False)
