"""Request schemas generated from the contract: what is accepted, what is refused and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from pydantic import ValidationError

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.serve.schemas import (
    error_detail,
    parse_predict,
    predict_request_model,
    records_to_table,
    request_model,
)

GOOD = {"transaction_id": "tx00000001", "user_id": "u000001", "merchant_id": "m00001",
        "event_time": "2026-01-02T10:00:00+02:00", "amount": 12.5, "channel": " WEB ",
        "merchant_category": "travel", "country": "us", "distance_from_home_km": 3.0,
        "device_age_days": None}


@pytest.fixture(scope="module")
def contract():
    return compose_settings([]).contract


@pytest.fixture(scope="module")
def model(contract):
    return predict_request_model(contract, max_records=5)


def errors(model, body) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        parse_predict(model, json.dumps(body).encode() if not isinstance(body, bytes) else body)
    return error_detail(info.value)


def test_record_model_has_every_column_but_the_label(contract):
    fields = request_model(contract).model_fields
    assert set(fields) == {c.name for c in contract.columns} - {"is_fraud"}
    assert fields["amount"].is_required() and not fields["device_age_days"].is_required()


def test_good_record_is_normalized_as_in_ingestion(model):
    (rec,) = parse_predict(model, json.dumps({**GOOD, "is_fraud": 1, "extra": "x"}).encode())
    assert rec["channel"] == "web" and rec["country"] == "US"  # trim/lower/upper from the contract
    assert "is_fraud" not in rec and "extra" not in rec
    assert rec["event_time"] == datetime(2026, 1, 2, 8, tzinfo=UTC)


def test_records_wrapper_and_limits(model):
    assert len(parse_predict(model, json.dumps({"records": [GOOD] * 5}).encode())) == 5
    assert errors(model, {"records": [GOOD] * 6})[0]["loc"] == ["body", "records"]
    assert errors(model, {"records": []})[0]["type"] == "too_short"


@pytest.mark.parametrize("change, field, kind", [
    ({"amount": None}, "amount", "float_type"),
    ({"amount": "abc"}, "amount", "float_type"),
    ({"amount": True}, "amount", "float_type"),
    ({"amount": -3.0}, "amount", "greater_than_equal"),
    ({"channel": "fax"}, "channel", "literal_error"),
    ({"merchant_category": 7}, "merchant_category", "literal_error"),
    ({"transaction_id": "tx1"}, "transaction_id", "string_pattern_mismatch"),
    ({"user_id": "  "}, "user_id", "missing"),
    ({"event_time": "yesterday"}, "event_time", "datetime_from_date_parsing"),
    ({"distance_from_home_km": -1}, "distance_from_home_km", "greater_than_equal"),
])
def test_bad_values_are_refused_naming_the_field(model, change, field, kind):
    (err,) = errors(model, {**GOOD, **change})
    assert err["loc"] == ["body", "records", 0, field] and err["type"] == kind


def test_missing_field_and_bad_json(model):
    body = {k: v for k, v in GOOD.items() if k != "merchant_id"}
    (err,) = errors(model, body)
    assert err["loc"][-1] == "merchant_id" and err["type"] == "missing"
    assert errors(model, b"{not json")[0]["type"] == "json_invalid"
    assert errors(model, b"[1, 2]")[0]["type"] == "model_type"


def test_optional_fields_accept_blank_and_absent(model):
    body = {k: v for k, v in GOOD.items() if k != "device_age_days"}
    (rec,) = parse_predict(model, json.dumps({**body, "distance_from_home_km": ""}).encode())
    assert rec["distance_from_home_km"] is None and rec["device_age_days"] is None


def test_records_to_table_is_contract_typed(model, contract):
    naive = {**GOOD, "event_time": "2026-01-02 10:00:00"}  # naive → the column's timezone (UTC)
    recs = parse_predict(model, json.dumps({"records": [GOOD, naive]}).encode())
    table = records_to_table(recs, contract)
    assert "is_fraud" not in table.column_names
    assert table.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("amount").type == pa.float64()
    assert table.schema.field("device_age_days").type == pa.float64()
    assert table.column("device_age_days").null_count == 2
    assert table.column("event_time").to_pylist() == [
        datetime(2026, 1, 2, 8, tzinfo=UTC), datetime(2026, 1, 2, 10, tzinfo=UTC)]
