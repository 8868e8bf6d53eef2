"""Table-driven contract tests: each kind of defect gets its reason code, good values coerce."""

import dataclasses
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.contract import ContractError, apply_contract, validate_contract

CONTRACT = compose_settings([]).contract
GOOD = dict(transaction_id="tx00000001", user_id="u000001", merchant_id="m00001",
            event_time="2026-01-02T03:04:05Z", amount="12.5", channel="web",
            merchant_category="travel", country="US", distance_from_home_km="1.5",
            device_age_days="30", is_fraud="0")
TS = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def run(**changes):
    out = apply_contract(pa.Table.from_pylist([{**GOOD, **changes}]), CONTRACT)
    return out.to_pylist()[0]


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-01-02T03:04:05Z", TS),
    ("2026-01-02 03:04:05", TS),
    ("02/01/2026 03:04", TS.replace(second=0)),
    ("1767323045", TS),
    ("1767323045000", TS),
])
def test_declared_timestamp_formats_parse(value, expected):
    row = run(event_time=value)
    assert row["_reasons"] is None and row["event_time"] == expected


@pytest.mark.parametrize("value", ["yesterday", "2026-13-45 99:00:00", "01/02/26", "17673230"])
def test_undeclared_timestamps_are_quarantined_not_guessed(value):
    assert run(event_time=value)["_reasons"] == "format:event_time"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"amount": "12,50 EUR"}, "type:amount"),
    ({"amount": "-3"}, "range:amount"),
    ({"amount": ""}, "missing:amount"),
    ({"amount": None}, "missing:amount"),
    ({"channel": "w3b"}, "enum:channel"),
    ({"user_id": "??"}, "regex:user_id"),
    ({"is_fraud": "2"}, "range:is_fraud"),
    ({"device_age_days": "old"}, "type:device_age_days"),
])
def test_defects_get_reason_codes(changes, reason):
    assert run(**changes)["_reasons"] == reason


def test_several_defects_are_all_listed():
    reasons = run(amount="x", channel="w3b")["_reasons"].split(";")
    assert sorted(reasons) == ["enum:channel", "type:amount"]


def test_normalization_and_nullable_columns():
    row = run(channel="  WEB ", country="us", distance_from_home_km="")
    assert row["_reasons"] is None
    assert (row["channel"], row["country"], row["distance_from_home_km"]) == ("web", "US", None)


def test_raw_values_are_kept_for_quarantined_rows():
    assert '"12,50 EUR"' in run(amount="12,50 EUR")["_raw"]


@pytest.mark.parametrize(("change", "key"), [
    ({"event_time": "nope"}, "contract.event_time"),
    ({"dedup_key": "nope"}, "contract.dedup_key"),
    ({"max_quarantine_fraction": 2.0}, "contract.max_quarantine_fraction"),
])
def test_invalid_contract_names_the_key(change, key):
    with pytest.raises(ContractError, match=key):
        validate_contract(dataclasses.replace(CONTRACT, **change))


def test_timestamp_without_formats_is_rejected():
    cols = [dataclasses.replace(c, formats=[]) if c.name == "event_time" else c for c in CONTRACT.columns]
    with pytest.raises(ContractError, match=r"columns\[3\]\.formats"):
        validate_contract(dataclasses.replace(CONTRACT, columns=cols))
