"""Start-up validation of a data contract: every mistake fails before any data is read, and the
message names the offending key (`contract.columns[3].formats[1]: ...`)."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.settings import ColumnSpec, ContractSettings

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # "_…" is reserved for bookkeeping columns
RESERVED = {"event_date"}  # the clean lake's partition column
EPOCH_FORMATS = ("epoch_s", "epoch_ms")
DIRECTIVES = set("YmdHMSzjbBaApIy")  # what Arrow's strptime parses (no %f: fractions are unsupported)
DAY_MONTH = re.compile(r"%[dmbB]")


class ContractError(ValueError):
    """The contract itself is invalid; the message names the offending key."""


def column(contract: ContractSettings, name: str) -> ColumnSpec:
    return next(c for c in contract.columns if c.name == name)


def validate_contract(contract: ContractSettings) -> None:
    """Fail at start-up, naming the key, rather than mid-pipeline."""
    if not contract.columns:
        raise ContractError("contract.columns: a contract declares at least one column")
    names = [c.name for c in contract.columns]
    for i, col in enumerate(contract.columns):
        _validate_column(col, f"contract.columns[{i}]")
        if names.index(col.name) != i:
            raise ContractError(f"contract.columns[{i}].name: {col.name!r} is declared twice")
    for key in ("event_time", "label", "dedup_key"):
        value = getattr(contract, key)
        if value is not None and value not in names:
            raise ContractError(f"contract.{key}: {value!r} is not a declared column")
    for i, key in enumerate(contract.entity_keys):
        if key not in names:
            raise ContractError(f"contract.entity_keys[{i}]: {key!r} is not a declared column")
    if not 0 <= contract.max_quarantine_fraction <= 1:
        raise ContractError("contract.max_quarantine_fraction: must be within [0, 1]")
    if column(contract, contract.event_time).type != "timestamp":
        raise ContractError(f"contract.event_time: column {contract.event_time!r} must be a timestamp")
    if contract.dedup_key is not None and column(contract, contract.dedup_key).nullable:
        raise ContractError(f"contract.dedup_key: column {contract.dedup_key!r} must not be nullable")


def _validate_column(col: ColumnSpec, where: str) -> None:
    if not NAME_RE.match(col.name) or col.name in RESERVED:
        raise ContractError(f"{where}.name: {col.name!r} must be a plain identifier (not {sorted(RESERVED)})")
    if col.type == "timestamp" and not col.formats:
        raise ContractError(f"{where}.formats: a timestamp column needs its accepted formats")
    if col.formats and col.type != "timestamp":
        raise ContractError(f"{where}.formats: only timestamp columns take formats")
    for j, fmt in enumerate(col.formats):
        _validate_format(fmt, f"{where}.formats[{j}]")
    _check_ambiguous_formats(col.formats, f"{where}.formats")
    _check_bare_numbers(col.formats, f"{where}.formats")
    if col.regex is not None:
        try:
            re.compile(col.regex)
            pc.match_substring_regex(pa.array([""]), col.regex)  # RE2 rejects some Python syntax
        except (re.error, pa.ArrowInvalid) as err:
            raise ContractError(f"{where}.regex: {err}") from err
    if (col.min is not None or col.max is not None) and col.type not in ("float", "int"):
        raise ContractError(f"{where}: min/max apply to float and int columns, not {col.type}")
    if col.min is not None and col.max is not None and col.min > col.max:
        raise ContractError(f"{where}: min {col.min} is above max {col.max}")
    if col.allowed is not None:
        _validate_allowed(col, f"{where}.allowed")
    try:
        pc.assume_timezone(pa.array([0], pa.timestamp("s")), timezone=col.timezone)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ContractError(f"{where}.timezone: unknown timezone {col.timezone!r}") from err


def _validate_format(fmt: str, where: str) -> None:
    if fmt in EPOCH_FORMATS:
        return
    directives = re.findall(r"%(.)", fmt.replace("%%", ""))
    unknown = [d for d in directives if d not in DIRECTIVES]
    if not directives or unknown:
        raise ContractError(f"{where}: {fmt!r} is neither {list(EPOCH_FORMATS)} nor a strptime format "
                            f"with known directives (unknown: {unknown})")


def _check_ambiguous_formats(formats: list[str], where: str) -> None:
    """Two formats that differ only in where day and month go (%d/%m vs %m/%d) would make 02/01
    mean two dates: the contract must pick one, the data is never asked to disambiguate."""
    seen: dict[str, str] = {}
    for fmt in formats:
        shape = DAY_MONTH.sub("%D", fmt)
        if shape in seen and seen[shape] != fmt:
            raise ContractError(f"{where}: {seen[shape]!r} and {fmt!r} are ambiguous (day and month "
                                "swap); declare only one")
        seen[shape] = fmt


def _check_bare_numbers(formats: list[str], where: str) -> None:
    """With epoch formats declared, a strptime format made only of numeric fields (%Y%m%d%H%M)
    could read the same digits as another instant; epoch formats are also tried first."""
    if not any(f in EPOCH_FORMATS for f in formats):
        return
    for j, fmt in enumerate(formats):
        if fmt not in EPOCH_FORMATS and not re.sub(r"%[YmdHMSjyI]", "", fmt):
            raise ContractError(f"{where}[{j}]: {fmt!r} reads bare digits, as epoch formats do: ambiguous")


def _validate_allowed(col: ColumnSpec, where: str) -> None:
    if col.type == "timestamp":
        raise ContractError(f"{where}: allowed values are not supported for timestamp columns")
    arrow = {"string": pa.string(), "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}[col.type]
    try:
        pa.array([str(v) for v in col.allowed]).cast(arrow)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ContractError(f"{where}: {col.allowed} are not all {col.type} values") from err
