"""Property: whatever mess a file holds, every non-blank line comes out exactly once, as a clean,
quarantined or duplicate row, and rows_in == clean + quarantined + duplicates_removed.

Hypothesis writes random messy CSV and JSON Lines files (good rows, garbage values, missing and
padded fields, quotes, too few / too many fields, unterminated quotes, blank lines, re-sent rows)
and cuts them into random byte-range splits; no Ray, the same functions the Ray tasks run.
"""

import json
import os

import numpy as np
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlinfra_ray import sources
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.contract import LINE
from mlinfra_ray.ingest_read import read_split_lines, read_validated
from mlinfra_ray.routing import CLEAN, DUPLICATE, QUARANTINED, route
from tests.unit.test_contract import GOOD

CONTRACT = compose_settings([]).contract
# Raise for a deeper hunt: at 500, this test found both int-column crashes that 76b5ccb fixed (an
# int past int64, one past 2**53 in a range check) on the code before it; at 100-150 it did not.
EXAMPLES = int(os.environ.get("MLINFRA_PROPERTY_EXAMPLES", 100))
FIELDS = list(GOOD)
MESSY_VALUES = st.one_of(
    st.sampled_from(["", " ", "n/a", "-1", "1e999", "12,5", '"quoted"', "yesterday", "1767323045",
                     "02/01/2026 03:04", " WEB ", "US", "us", "é", "tx00000001", "0", "1", "nan",
                     "99999999999999999999", "-9223372036854775809", "1e-400", "0x1F", "2026-01-02", "true",
                     "1_000", "\t1\t", "∞"]),
    st.text(max_size=6))  # anything at all
NUMBERS = st.one_of(st.integers(-10**25, 10**25).map(str), st.floats(allow_nan=False).map(repr),  # any size
                    st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{0,5})?([eE]-?[0-9]{1,4})?", fullmatch=True))
NUMERIC_FIELDS = ["event_time", "amount", "distance_from_home_km", "device_age_days", "is_fraud"]


@st.composite
def messy_line(draw, fmt: str, ids: list[str]) -> str:
    kind = draw(st.sampled_from(["good", "good", "good", "messy", "number", "few", "many", "quote", "blank",
                                 "resend"]))
    row = {**GOOD, "transaction_id": draw(st.sampled_from(ids))}
    if kind == "messy":
        for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
            row[field] = draw(MESSY_VALUES)
    if kind == "number":  # a number too long, too big or too small for its column
        row[draw(st.sampled_from(NUMERIC_FIELDS))] = draw(NUMBERS)
    if kind == "blank":
        return ""
    if fmt == "jsonl":
        if kind in ("few", "many", "quote"):
            return draw(st.sampled_from(['{"transaction_id": ', "[1, 2]", "{bad json}", '"just a string"']))
        return json.dumps(row)
    cells = [_csv_cell(row[f]) for f in FIELDS]
    if kind == "few":
        cells = cells[: draw(st.integers(1, len(cells) - 1))]
    elif kind == "many":
        cells += ["extra"] * draw(st.integers(1, 3))
    elif kind == "quote":
        cells[draw(st.integers(0, len(cells) - 1))] = '"unterminated'
    return ",".join(cells)


def _csv_cell(value: str) -> str:
    if any(ch in value for ch in ',"\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def messy_file(draw) -> tuple[str, str]:
    fmt = draw(st.sampled_from(["csv", "jsonl"]))
    ids = [f"tx{i:08d}" for i in range(draw(st.integers(1, 30)))]  # few ids: plenty of re-sends
    lines = draw(st.lists(messy_line(fmt, ids), min_size=0, max_size=40))
    header = [",".join(FIELDS)] if fmt == "csv" else []
    return fmt, "\n".join(header + lines) + draw(st.sampled_from(["\n", "", "\n\n"]))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messy_file(), st.sampled_from([211, 1 << 20]))
def test_every_line_is_accounted_for_exactly_once(tmp_path, monkeypatch, case, split_bytes):
    fmt, text = case
    path = tmp_path / f"messy.{fmt}"
    path.write_text(text)
    monkeypatch.setattr(sources, "SPLIT_BYTES", split_bytes)
    table, entries = read_validated(sources.list_raw_files(str(path)), CONTRACT, use_ray=False)
    routed = route(table, CONTRACT)

    counts = np.bincount(routed.outcome, minlength=3)
    assert len(routed.outcome) == routed.clean.num_rows + routed.quarantine.num_rows + routed.duplicates
    assert (counts[CLEAN], counts[QUARANTINED], counts[DUPLICATE]) == \
        (routed.clean.num_rows, routed.quarantine.num_rows, routed.duplicates)
    lines = text.split("\n")
    first = 2 if fmt == "csv" else 1
    expected = [i + 1 for i, line in enumerate(lines) if i + 1 >= first and line.strip("\r")]
    if fmt == "jsonl":
        expected = [n for n in expected if lines[n - 1].strip()]
    assert sorted(table.column(LINE).to_pylist()) == expected  # each line once, with its own number
    keys = routed.clean.column("transaction_id").to_pylist()
    assert len(keys) == len(set(keys))  # no duplicate survives
    time = CONTRACT.event_time  # the writer's one-copy gather == filter + sort
    assert routed.clean_sorted_by(time).equals(routed.clean.sort_by(time))
    assert sum(routed.reasons.values()) >= routed.quarantine.num_rows
    assert routed.quarantine.column("_reasons").null_count == 0
    assert len(entries) == 1 and entries[0]["blake3"] == _file_digest(path, split_bytes)
    # ingest()'s path: split-local lines, file lines only for the rows that leave — the same outputs
    local, _, first_line = read_split_lines(sources.list_raw_files(str(path)), CONTRACT, use_ray=False)
    lazy = route(local, CONTRACT, first_line=first_line)
    assert lazy.quarantine.equals(routed.quarantine) and lazy.clean.equals(routed.clean)
    assert lazy.clean_sorted_by(time).equals(routed.clean_sorted_by(time))


def _file_digest(path, split_bytes: int) -> str:
    data = path.read_bytes()
    parts = [sources.content_hash(data[i:i + split_bytes]) for i in range(0, len(data), split_bytes)] or \
        [sources.content_hash(b"")]
    return sources.file_digest(parts)


FLOAT_FIELDS = ["amount", "distance_from_home_km", "device_age_days"]
ODD_NUMBERS = st.one_of(
    st.sampled_from([" 1.5", "1.5\t", "\t7 ", " -0 ", "-0", "-00", "0x1F", "0X10", " ", "\t", "1e5", ".5", "5.",
                     "+2.5", "inf", "nan", "2026-01-02", "03:04:05", "12,5", "1_000", "7"]),
    st.from_regex(r"[ \t]{0,2}-?(0x)?[0-9]{1,4}(\.[0-9]{0,2})?[ \t]{0,2}", fullmatch=True))


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(FLOAT_FIELDS), ODD_NUMBERS, st.sampled_from(["12.5", "7", "-3"]))
def test_a_value_means_the_same_whatever_its_neighbours(tmp_path_factory, field, value, neighbour):
    """pyarrow types a CSV float column itself when every value in the split reads as a number
    (the fast path); one bad neighbour sends the split through the contract's text path. A value's
    outcome, reasons and clean value (to the sign of zero) must not depend on which path it took."""
    def outcome(rows: list[str]) -> tuple:
        folder = tmp_path_factory.mktemp("split")
        lines = [",".join(FIELDS)] + [",".join(_csv_cell({**GOOD, "transaction_id": f"tx{i:08d}", field: v}[f])
                                               for f in FIELDS) for i, v in enumerate(rows)]
        (folder / "t.csv").write_text("\n".join(lines) + "\n")
        table, _ = read_validated(sources.list_raw_files(str(folder / "t.csv")), CONTRACT, use_ray=False)
        routed = route(table, CONTRACT)
        first = routed.quarantine.filter(pc.equal(routed.quarantine.column(LINE), 2))
        clean = routed.clean.filter(pc.equal(routed.clean.column("transaction_id"), "tx00000000"))
        return (first.column("_reasons").to_pylist(),
                [repr(v) for v in clean.column(field).to_pylist()])  # repr: -0.0 is not 0.0

    alone = outcome([value, neighbour])
    assert outcome([value, neighbour, "garbage"]) == alone  # the text path
    assert outcome([value, neighbour, "0.25"]) == alone  # a float split (and an int one, above)


def test_a_blank_category_in_one_split_does_not_break_gathering_across_splits(tmp_path, monkeypatch):
    """A category that is blank after trimming is null; its split's dictionary must not hold the
    null, or Arrow cannot unify the splits' dictionaries when clean rows are gathered."""
    rows = [{**GOOD, "transaction_id": f"tx{i:08d}", "channel": "  " if i == 1 else ["web", "pos"][i % 2]}
            for i in range(40)]
    path = tmp_path / "t.csv"
    path.write_text("\n".join([",".join(FIELDS)] + [",".join(r[f] for f in FIELDS) for r in rows]) + "\n")
    monkeypatch.setattr(sources, "SPLIT_BYTES", 400)  # several splits, different dictionaries
    table, _ = read_validated(sources.list_raw_files(str(path)), CONTRACT, use_ray=False)
    routed = route(table, CONTRACT)
    assert routed.clean.num_rows == 39 and set(routed.clean.column("channel").to_pylist()) == {"web", "pos"}
    assert routed.quarantine.column("_reasons").to_pylist() == ["missing:channel"]
