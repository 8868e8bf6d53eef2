"""Timestamp parsing for the contract: only the declared formats, never a guess.

Epoch formats go first (one digit test; the contract rejects strptime formats that could
also read a bare number, so the order cannot change a result), then strptime formats in the
declared order, each pass seeing only still-unparsed values (Arrow's strptime skips nulls).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

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
    epochs = [f for f in col.formats if f in EPOCH_DIGITS]
    result = _parse_epochs(text, epochs) if epochs else pa.nulls(len(text), ARROW_TYPES["timestamp"])
    remaining, ambiguous = set_nulls(text, pc.is_null(result)), None
    for fmt in (f for f in col.formats if f not in EPOCH_DIGITS):
        if remaining.null_count == len(remaining):
            break
        parsed, amb = _parse_strptime(remaining, fmt, col.timezone)
        result = pc.coalesce(result, parsed)
        remaining = set_nulls(remaining, pc.is_null(parsed))
        if amb is not None:
            ambiguous = amb if ambiguous is None else pc.or_(ambiguous, amb)
    checks: list[Check] = []
    recognized = pc.is_valid(result)  # a format matched (even if the local time is ambiguous)
    if ambiguous is not None and ambiguous.true_count:
        checks.append((ambiguous, f"ambiguous:{col.name}"))
        result = pc.if_else(ambiguous, pa.scalar(None, result.type), result)
    return result, recognized, checks


def _parse_epochs(text: pa.Array, formats: list[str]) -> pa.Array:
    """Digits only, and the digit count picks the unit (9-10: seconds, 12-13: milliseconds)."""
    from mlinfra_ray.text_kernels import epochs

    micros = epochs(text, [EPOCH_DIGITS[f] for f in formats])
    return micros.cast(pa.timestamp("us")).cast(ARROW_TYPES["timestamp"])


def _parse_strptime(text: pa.Array, fmt: str, timezone: str) -> tuple[pa.Array, pa.Array | None]:
    """(parsed or null, ambiguous-local-time mask or None) for one strptime format."""
    out_type = ARROW_TYPES["timestamp"]
    naive = strptime(text, fmt)
    if naive.type.tz is not None:  # the format has %z: an instant
        return naive.cast(out_type), None
    if fmt.endswith("Z") or timezone == "UTC":  # a literal Z, or wall-clock time in UTC
        return naive.cast(pa.timestamp("us")).cast(out_type), None
    early = pc.assume_timezone(naive, timezone=timezone, ambiguous="earliest", nonexistent="earliest")
    late = pc.assume_timezone(naive, timezone=timezone, ambiguous="latest", nonexistent="latest")
    return early.cast(out_type), pc.fill_null(pc.not_equal(early, late), False)


def strptime(text: pa.Array, fmt: str) -> pa.Array:
    """`pc.strptime(text, fmt, unit="us", error_is_null=True)`, with the strict kernel deciding
    the zero-padded values and the values that lack one of the format's literals first: only
    the rest (usually none) pays for strptime."""
    from mlinfra_ray.text_kernels import ASK, PARSED, strict_times

    fast = strict_times(text, fmt)
    if fast is None:
        return pc.strptime(text, format=fmt, unit="us", error_is_null=True)
    values, state = fast
    parsed = pa.array(values, pa.timestamp("us"), mask=state != PARSED)
    ask = state == ASK
    if not ask.any():
        return parsed
    rest = pc.strptime(set_nulls(text, pa.array(ask)), format=fmt, unit="us", error_is_null=True)
    return pc.coalesce(parsed, rest)
