"""Request validation built from the data contract, and the contract-typed table a request becomes.

The pydantic models are generated from the same `ContractSettings` that ingestion applies, so a
column added to the contract is validated online without touching this file. Normalization
(trim/lower/upper) runs before the checks, as in ingestion: " WEB " is accepted as "web" both
offline and online. The label column is never part of a request.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import pyarrow as pa
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mlinfra_ray.contract import arrow_schema
from mlinfra_ray.settings import ColumnSpec, ContractSettings

# Unknown keys are ignored, as ingestion drops extra columns; NaN/inf are never valid values.
RECORD_CONFIG = ConfigDict(extra="ignore", allow_inf_nan=False)
BASE_TYPES: dict[str, type] = {"string": str, "float": float, "int": int, "bool": bool,
                               "timestamp": datetime}


def request_model(contract: ContractSettings) -> type[BaseModel]:
    """A pydantic model of one record: every contract column except the label."""
    fields = {c.name: _field(c) for c in contract.columns if c.name != contract.label}
    return create_model(f"{_title(contract.name)}Record", __config__=RECORD_CONFIG, **fields)


class _Records(BaseModel):
    """Accepts `{"records": [...]}`, a bare JSON array of records, or one bare record object."""

    @model_validator(mode="before")
    @classmethod
    def _wrap_single(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"records": data}
        if isinstance(data, dict) and "records" not in data:
            return {"records": [data]}
        return data


def predict_request_model(contract: ContractSettings, max_records: int) -> type[BaseModel]:
    """The /predict body: 1..max_records records (error locations are records.<i>.<field>)."""
    record = request_model(contract)
    return create_model("PredictRequest", __base__=_Records,
                        records=(list[record], Field(min_length=1, max_length=max_records)))


def response_id_field(contract: ContractSettings) -> str | None:
    """The request column echoed in each prediction so callers can match them: the dedup key."""
    key = contract.dedup_key
    if key and key != contract.label and any(c.name == key for c in contract.columns):
        return key
    return None


def response_model(contract: ContractSettings) -> type[BaseModel]:
    """The /predict answer: per record its id (the contract's dedup key), score and decision."""
    fields: dict[str, Any] = {}
    key = response_id_field(contract)
    if key:
        fields[key] = (str | None, Field(default=None, description="echoed from the request"))
    fields["score"] = (float, Field(ge=0.0, le=1.0, description="model probability"))
    fields[contract.label] = (bool, Field(description="score >= the model's decision threshold"))
    prediction = create_model(f"{_title(contract.name)}Prediction", **fields)
    model_ref = create_model("ModelRef", version=(str, ...), alias=(str, ...))
    return create_model("PredictResponse", predictions=(list[prediction], ...), model=(model_ref, ...))


def parse_predict(model: type[BaseModel], body: bytes) -> list[dict[str, Any]]:
    """Validated records as plain dicts; raises ValidationError (bad JSON included)."""
    return [r.model_dump() for r in model.model_validate_json(body).records]


def error_detail(err: ValidationError) -> list[dict[str, Any]]:
    """FastAPI-style 422 detail (type, loc, msg), JSON-safe: offending inputs are not echoed."""
    return [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]}
            for e in json.loads(err.json(include_url=False, include_input=False))]


def records_to_table(records: list[dict[str, Any]], contract: ContractSettings) -> pa.Table:
    """Contract-typed Arrow table (label excluded) — the input of `Bundle.predict`."""
    schema = request_schema(contract)
    columns = [pa.array([r.get(f.name) for r in records], f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def request_schema(contract: ContractSettings) -> pa.Schema:
    full = arrow_schema(contract)  # timestamps are timestamp("us", tz="UTC") there
    return pa.schema([f for f in full if f.name != contract.label])


def _field(col: ColumnSpec) -> tuple[Any, Any]:
    tp = _value_type(col) | None if col.nullable else _value_type(col)
    # Outside Optional, so a blank value of a nullable column becomes None (missing), as offline.
    tp = Annotated[tp, BeforeValidator(_normalizer(col.normalize, col.nullable))]
    return tp, Field(default=None) if col.nullable else Field(...)


def _value_type(col: ColumnSpec) -> Any:
    """The non-null type of a column with its checks attached (Annotated metadata)."""
    if col.type == "string":
        tp: Any = Literal[tuple(col.allowed)] if col.allowed else str
        return Annotated[tp, Field(pattern=col.regex)] if col.regex is not None else tp
    if col.type == "timestamp":
        return Annotated[datetime, AfterValidator(_assume_timezone(col.timezone))]
    # Strict: a JSON API takes numbers and booleans as such ("12.5" or true for amount → 422);
    # strict float still accepts JSON integers.
    constraints = {k: v for k, v in (("ge", col.min), ("le", col.max)) if v is not None}
    return Annotated[BASE_TYPES[col.type], Field(strict=True, **constraints)]


def _normalizer(steps: list[str], nullable: bool) -> Any:
    """Trim/case as ingestion does; an empty string counts as missing (as in the contract)."""
    def normalize(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        for step in steps:
            value = {"trim": str.strip, "lower": str.lower, "upper": str.upper}[step](value)
        if value == "" and not nullable:
            raise PydanticCustomError("missing", "Field required (blank value)")
        return value if value != "" else None

    return normalize


def _assume_timezone(tz: str) -> Any:
    """Naive timestamps are read in the column's declared timezone (UTC by default)."""
    zone = ZoneInfo(tz)

    def assume(value: datetime) -> datetime:
        value = value.replace(tzinfo=zone) if value.tzinfo is None else value
        try:  # stored as UTC: an instant that has no UTC datetime (year 1 at +14:00) is invalid input
            return value.astimezone(UTC)
        except (OverflowError, ValueError) as err:
            raise PydanticCustomError("datetime_range", "Timestamp out of range in UTC") from err

    return assume


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
