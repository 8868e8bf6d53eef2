"""Table-driven contract tests: each kind of defect gets its reason code, good values coerce, and
the same value means the same thing whatever form it arrives in (text, dictionary, native)."""

import dataclasses
import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.contract import (
    ContractError,
    _coerce_categorical,
    apply_contract,
    coerce_column,
    validate_contract,
)
from mlinfra_ray.settings import ColumnSpec
from mlinfra_ray.text_kernels import CODES_LIMIT

CONTRACT = compose_settings([]).contract
GOOD = dict(transaction_id="tx00000001", user_id="u000001", merchant_id="m00001",
            event_time="2026-01-02T03:04:05Z", amount="12.5", channel="web",
            merchant_category="travel", country="US", distance_from_home_km="1.5",
            device_age_days="30", is_fraud="0")
TS = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def run(contract=CONTRACT, **changes):
    out = apply_contract(pa.Table.from_pylist([{**GOOD, **changes}]), contract)
    return out.to_pylist()[0]


def with_column(column: str, **changes):
    cols = [dataclasses.replace(c, **changes) if c.name == column else c for c in CONTRACT.columns]
    return dataclasses.replace(CONTRACT, columns=cols)


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-01-02T03:04:05Z", TS),
    ("2026-01-02 03:04:05", TS),
    ("02/01/2026 03:04", TS.replace(second=0)),  # day first, as declared
    ("1767323045", TS),  # epoch seconds
    ("1767323045000", TS),  # epoch milliseconds
    (" 2026-01-02 03:04:05", TS),
])
def test_declared_timestamp_formats_parse(value, expected):
    row = run(event_time=value)
    assert row["_reasons"] is None and row["event_time"] == expected


@pytest.mark.parametrize("value", [
    "yesterday", "2026-13-45 99:00:00", "01/02/26", "17673230",  # 8 digits: not an epoch width
    "17673230450", "2026-01-02T03:04:05+01:00", "2026-01-02T03:04:05.123Z", "1767323045.5",
])
def test_undeclared_timestamps_are_quarantined_not_guessed(value):
    assert run(event_time=value)["_reasons"] == "format:event_time"


def test_local_time_zones_and_dst_are_never_guessed():
    berlin = with_column("event_time", timezone="Europe/Berlin")
    assert run(berlin, event_time="2026-01-02 04:04:05")["event_time"] == TS  # UTC+1 in winter
    assert run(berlin, event_time="2026-01-02T03:04:05Z")["event_time"] == TS  # a literal Z is UTC
    assert run(berlin, event_time="1767323045")["event_time"] == TS  # epochs are instants
    for ambiguous in ("2026-10-25 02:30:00", "2026-03-29 02:30:00"):  # fall back / spring forward
        assert run(berlin, event_time=ambiguous)["_reasons"] == "ambiguous:event_time"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"amount": "12,50 EUR"}, "type:amount"),
    ({"is_fraud": "+1"}, "type:is_fraud"),
    ({"amount": "nan"}, "type:amount"),
    ({"amount": "1e999"}, "type:amount"),
    ({"amount": "-3"}, "range:amount"),
    ({"amount": "100000.5"}, "range:amount"),
    ({"amount": ""}, "missing:amount"),
    ({"amount": "   "}, "type:amount"),  # whitespace is a value unless the contract trims it
    ({"amount": None}, "missing:amount"),
    ({"transaction_id": "  "}, "missing:transaction_id"),  # trimmed to nothing
    ({"channel": "w3b"}, "enum:channel"),
    ({"user_id": "??"}, "regex:user_id"),
    ({"is_fraud": "2"}, "range:is_fraud"),
    ({"is_fraud": "1.0"}, "type:is_fraud"),
    ({"is_fraud": "99999999999999999999"}, "type:is_fraud"),  # past int64: once failed the whole batch
    ({"is_fraud": "-9223372036854775808"}, "range:is_fraud"),  # past 2**53: once failed the range check
    ({"amount": "0.000000000000000000000000001"}, "range:amount"),  # read by Arrow, not the fast path
    ({"device_age_days": "old"}, "type:device_age_days"),
])
def test_defects_get_reason_codes(changes, reason):
    assert run(**changes)["_reasons"] == reason


def test_several_defects_are_all_listed_in_contract_order():
    assert run(amount="x", channel="w3b", user_id="?")["_reasons"] == "regex:user_id;type:amount;enum:channel"


def test_normalization_and_nullable_columns():
    row = run(channel="  WEB ", country="us", distance_from_home_km="", transaction_id=" tx00000001 ")
    assert row["_reasons"] is None and row["_raw"] is None
    assert (row["channel"], row["country"], row["distance_from_home_km"]) == ("web", "US", None)
    assert row["transaction_id"] == "tx00000001"


@pytest.mark.parametrize("padded", [" tx00000001", "tx00000001\t", "\u00a0tx00000001\u2003"])
def test_trim_removes_ascii_and_unicode_whitespace(padded):
    row = run(transaction_id=padded)
    assert row["_reasons"] is None and row["transaction_id"] == "tx00000001"


def test_raw_values_are_kept_for_quarantined_rows_as_json():
    raw = json.loads(run(amount='12,50 "EUR"\\', channel=None)["_raw"])
    assert raw["amount"] == '12,50 "EUR"\\' and raw["channel"] is None and raw["user_id"] == "u000001"


def test_parser_rejections_keep_their_line_and_only_reason():
    batch = pa.Table.from_pylist([{**GOOD, "amount": None, "_parse_error": "parse:too_few_fields",
                                   "_raw_text": "tx1,broken"}])
    row = apply_contract(batch, CONTRACT).to_pylist()[0]
    assert (row["_reasons"], row["_raw"]) == ("parse:too_few_fields", "tx1,broken")


@pytest.mark.parametrize(("spec", "values"), [
    (ColumnSpec("c", "string", allowed=["web", "pos"], normalize=["trim", "lower"]),
     ["web", " POS ", "w3b", None, "", "web"]),
    (ColumnSpec("c", "float", min=0), ["1.5", "-1", "x", None, "2", "1e3"]),
    (ColumnSpec("c", "int", nullable=True), ["1", "1.0", "x", None, "", "-7"]),
    (ColumnSpec("c", "bool"), ["true", "No", "1", "maybe", None, "T"]),
])
def test_dictionary_input_means_what_text_means(spec, values):
    text = pa.array(values, pa.string())
    plain, plain_checks = coerce_column(text, spec)
    coded, coded_checks = coerce_column(text.dictionary_encode(), spec)
    assert plain.to_pylist() == coded.to_pylist()

    def failing(checks):
        return sorted((i, code) for mask, code in checks for i, v in enumerate(mask.to_pylist()) if v)

    assert failing(plain_checks) == failing(coded_checks)


def test_categorical_text_means_the_same_encoded_here_or_past_the_encoders_limit():
    """A categorical column arrives as text (CSV, JSON) or dictionary-encoded (Parquet); text is
    encoded before the checks, or, with more distinct values than a category column should have
    (garbage), checked row by row: the rows' values and failures are the same every way."""
    spec = ColumnSpec("c", "string", allowed=["web", "pos"], normalize=["trim", "lower"])
    few = ["web", " POS ", "w3b", None, "", "web", "WEB"] * 3
    many = few + [f"junk{i}" for i in range(CODES_LIMIT + 1)]
    for values in (few, many):
        text = pa.array(values, pa.string())
        results = [_coerce_categorical(x, spec) for x in (text, text.dictionary_encode())]
        for values_out, _ in results:
            assert pa.types.is_dictionary(values_out.type) and values_out.type.index_type == pa.int32()
        plain, plain_checks = coerce_column(text, spec)
        assert results[0][0].to_pylist() == results[1][0].to_pylist() == plain.to_pylist()

        def failing(checks):
            return sorted((i, code) for mask, code in checks for i, v in enumerate(mask.to_pylist()) if v)

        assert failing(results[0][1]) == failing(results[1][1]) == failing(plain_checks)
        assert ("missing:c" in {code for _, code in failing(results[0][1])}) and \
            ("enum:c" in {code for _, code in failing(results[0][1])})


@pytest.mark.parametrize(("spec", "native", "text"), [
    (ColumnSpec("c", "float", min=0), pa.array([1.5, -1.0, None, float("nan")]), ["1.5", "-1", None, "nan"]),
    (ColumnSpec("c", "float"), pa.array([7, None], pa.int64()), ["7", None]),
    (ColumnSpec("c", "int"), pa.array([1.0, 2.5]), ["1", "2.5"]),
    (ColumnSpec("c", "timestamp", formats=["%Y-%m-%d %H:%M:%S"]),
     pa.array([datetime(2026, 1, 2, 3, 4, 5)], pa.timestamp("s")), ["2026-01-02 03:04:05"]),
])
def test_native_parquet_types_mean_what_text_means(spec, native, text):
    a, a_checks = coerce_column(native, spec)
    b, b_checks = coerce_column(pa.array(text, pa.string()), spec)
    assert a.to_pylist() == b.to_pylist()
    def fails(checks):
        return [any(bool(m[i].as_py()) for m, _ in checks) for i in range(len(text))]

    assert fails(a_checks) == fails(b_checks)


@pytest.mark.parametrize(("change", "key"), [
    ({"event_time": "nope"}, "contract.event_time"),
    ({"event_time": "amount"}, "contract.event_time"),
    ({"label": "nope"}, "contract.label"),
    ({"dedup_key": "nope"}, "contract.dedup_key"),
    ({"dedup_key": "distance_from_home_km"}, "contract.dedup_key"),  # nullable
    ({"entity_keys": ["user_id", "nope"]}, r"contract.entity_keys\[1\]"),
    ({"max_quarantine_fraction": 2.0}, "contract.max_quarantine_fraction"),
    ({"columns": []}, "contract.columns"),
])
def test_invalid_contract_names_the_key(change, key):
    with pytest.raises(ContractError, match=key):
        validate_contract(dataclasses.replace(CONTRACT, **change))


@pytest.mark.parametrize(("name", "change", "key"), [
    ("event_time", {"formats": []}, r"columns\[3\]\.formats"),
    ("event_time", {"formats": ["%Y-%m-%d", "%Q"]}, r"columns\[3\]\.formats\[1\]"),
    ("event_time", {"formats": ["%Y-%m-%dT%H:%M:%S.%f"]}, r"columns\[3\]\.formats\[0\]"),
    ("event_time", {"formats": ["%d/%m/%Y", "%m/%d/%Y"]}, r"columns\[3\]\.formats: .*ambiguous"),
    ("event_time", {"formats": ["epoch_s", "%Y%m%d%H%M"]}, r"columns\[3\]\.formats\[1\].*ambiguous"),
    ("event_time", {"timezone": "Mars/Olympus"}, r"columns\[3\]\.timezone"),
    ("amount", {"formats": ["%Y"]}, r"columns\[4\]\.formats"),
    ("amount", {"min": 5.0, "max": 1.0}, r"columns\[4\]: min"),
    ("amount", {"allowed": ["cheap"]}, r"columns\[4\]\.allowed"),
    ("channel", {"min": 1.0}, r"columns\[5\]: min/max"),
    ("user_id", {"regex": "(unclosed"}, r"columns\[1\]\.regex"),
    ("user_id", {"name": "_user"}, r"columns\[1\]\.name"),
    ("user_id", {"name": "event_date"}, r"columns\[1\]\.name"),
    ("user_id", {"name": "merchant_id"}, r"columns\[2\]\.name: 'merchant_id' is declared twice"),
])
def test_invalid_column_names_the_key(name, change, key):
    with pytest.raises(ContractError, match=key):
        validate_contract(with_column(name, **change))


def test_contract_yaml_with_unknown_key_fails_at_compose():
    from mlinfra_ray.settings import SettingsError

    with pytest.raises(SettingsError, match=r"contract\.columns\[0\]\.nulable"):
        compose_settings(["+contract.columns.0.nulable=true"])


@pytest.mark.parametrize(("low", "high", "out_of_range"), [
    (0.0, 1.0, [False, False, True, True, True]),
    (0.5, 2.5, [True, False, False, True, True]),  # int values against fractional limits
    (-1e30, 1e30, [False] * 5),  # limits past int64
    (float("-inf"), float("inf"), [False] * 5),
])
def test_int_ranges_hold_for_every_int64(low, high, out_of_range):
    """Range checks on an int column compare as ints: a float limit once made Arrow cast the values
    to double, which raised for any value past 2**53."""
    col = dataclasses.replace(next(c for c in CONTRACT.columns if c.type == "int"), min=low, max=high)
    text = pa.array(["0", "1", "2", "-9223372036854775808", "9223372036854775807"])
    values, checks = coerce_column(text, col)
    fired = [any(m[i].as_py() for m, code in checks if code.startswith("range:")) for i in range(5)]
    assert fired == out_of_range and values.null_count == 0
