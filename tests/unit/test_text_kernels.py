"""The compiled contract kernels must give exactly Arrow's answers (RE2, strptime, casts) on any
text, including the cases they hand back to Arrow. Each property test generates values near the
boundary (right shape, one byte off, padding, out-of-range fields, non-ASCII, nulls)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlinfra_ray.contract import FLOAT_RE, INT_RE
from mlinfra_ray.contract_time import EPOCH_DIGITS, strptime
from mlinfra_ray.text_kernels import (
    ASK,
    PARSED,
    REJECTED,
    decimal_shape,
    epochs,
    fixed_pattern,
    regex_match,
    strict_format,
    strict_times,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NEAR = "0123456789tuxmTZ:-/. _+eE\t%é"  # bytes the patterns and formats below care about


def _text(values: list[str | None]) -> pa.Array:
    return pa.array(values, pa.string())


@pytest.mark.parametrize("regex, width", [
    ("^tx[0-9]{8}$", 10), ("^u[0-9]{6}$", 7), ("^[A-Z]{2}$", 2), (r"^\d{3}\.\d$", 5),
    ("^[a-cx-z_-]{0}k$", 1), ("^[A-Za-z0-9]{4}$", 4), (r"^a\-b\/c$", 5),
])
def test_fixed_patterns_compile_to_their_width(regex, width):
    table = fixed_pattern(regex)
    assert table is not None and table.shape == (width, 256)


@pytest.mark.parametrize("regex", [
    "tx[0-9]{8}$", "^tx[0-9]{8}", "^a+$", "^a*$", "^a?$", "^a{2,3}$", "^a{2,}$", "^.$", "^(ab)$", "^a|b$",
    "^[^0-9]$", r"^\w$", r"^\s$", r"^\D$", "^[[:alpha:]]$", "(?i)^a$", "^é$", r"^a\$", "^[a-]", "^[z-a]$",
])
def test_other_regexes_stay_with_re2(regex):
    assert fixed_pattern(regex) is None


PATTERNS = ["^tx[0-9]{8}$", "^u[0-9]{6}$", "^[A-Z]{2}$", r"^\d{2}\.\d$", "^[a-c-]{3}$", "^x[0-9]{0}y$"]


@SETTINGS
@given(st.sampled_from(PATTERNS), st.lists(st.one_of(st.none(), st.text(NEAR + "ABCDXYZabc", max_size=12),
                                                      st.from_regex(r"\Atx[0-9]{8}\Z"),
                                                      st.from_regex(r"\Au[0-9]{6}\Z")), max_size=40))
def test_regex_match_equals_re2(regex, values):
    text = _text(values)
    assert regex_match(text, regex).equals(pc.match_substring_regex(text, regex))


def test_regex_match_on_sliced_and_empty_arrays():
    text = _text(["tx00000001", None, "", "tx1", "tx00000002"]).slice(1)
    assert regex_match(text, "^tx[0-9]{8}$").to_pylist() == [None, False, False, True]
    assert regex_match(_text([]), "^tx[0-9]{8}$").to_pylist() == []
    assert regex_match(_text([None, ""]), "^[A-Z]{0}$").to_pylist() == [None, True]


@SETTINGS
@given(st.booleans(), st.lists(st.one_of(st.none(), st.text("0123456789+-.eE x", max_size=10),
                                         st.text(max_size=4)), max_size=40))
def test_decimal_shape_equals_the_contract_regexes(floating, values):
    text = _text(values)
    expected = pc.fill_null(pc.match_substring_regex(text, FLOAT_RE if floating else INT_RE), False)
    assert decimal_shape(text, floating).equals(expected)


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.text("0123456789", max_size=15), st.text("0123456789 -x", max_size=14)),
                max_size=40), st.sampled_from([["epoch_s"], ["epoch_ms"], ["epoch_s", "epoch_ms"]]))
def test_epochs_read_digits_by_count(values, formats):
    ranges = [EPOCH_DIGITS[f] for f in formats]
    expected = []
    for v in values:
        unit = next((u for lo, hi, u in ranges if v is not None and v.isascii() and v.isdigit()
                     and lo <= len(v) <= hi), None)
        expected.append(None if unit is None or int(v) * unit >= 2**63 else int(v) * unit)
    assert epochs(_text(values), ranges).to_pylist() == expected


def test_epochs_that_would_overflow_are_not_timestamps():
    out = epochs(_text(["9999999999999", "99999999999999999999", "1700000000000"]), [(13, 20, 1000)])
    assert out.to_pylist() == [9_999_999_999_999_000, None, 1_700_000_000_000_000]


@pytest.mark.parametrize("fmt, supported", [
    ("%Y-%m-%dT%H:%M:%SZ", True), ("%Y-%m-%d %H:%M:%S", True), ("%d/%m/%Y %H:%M", True),
    ("%Y%m%d", True), ("%m/%d/%Y", True), ("%Y-%m-%d %%", True), ("%Y-%m-%d %I:%M %p", False),
    ("%Y-%m-%dT%H:%M:%S%z", False),
    ("%H:%M", False), ("%Y-%m-%d %Y", False), ("%Y-%m-%d é", False), ("%Y-%m-%d %H:%M:%S.%f", False),
])
def test_strict_formats(fmt, supported):
    assert (strict_format(fmt) is not None) is supported


def test_strict_outcomes():
    text = _text(["2024-02-29T23:59:59Z", None, "2023-02-29T00:00:00Z", "05/01/2024 10:11",
                  " 2024-01-05T10:11:12Z", "2024-1-5T1:2:3Z", "yesterday"])
    values, state = strict_times(text, "%Y-%m-%dT%H:%M:%SZ")
    assert state.tolist() == [PARSED, 0, ASK, REJECTED, ASK, ASK, REJECTED]
    expected = pc.strptime(text[:1], format="%Y-%m-%dT%H:%M:%SZ", unit="us").cast(pa.int64())
    assert values[0] == expected[0].as_py()


FORMATS = ["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M", "%Y%m%d%H%M%S", "%m/%d/%Y",
           "%Y-%m-%d %%"]


@st.composite
def near_timestamps(draw):
    """Values formatted with one of FORMATS, with random field values (some out of range or
    unpadded), then possibly mutated by a byte, padding or truncation."""
    fmt = draw(st.sampled_from(FORMATS))
    fields = {"Y": draw(st.sampled_from([0, 1, 999, 1900, 1970, 2000, 2023, 2024, 2100, 9999])),
              "m": draw(st.integers(0, 13)), "d": draw(st.integers(0, 32)), "H": draw(st.integers(0, 25)),
              "M": draw(st.integers(0, 61)), "S": draw(st.integers(0, 61))}
    pad = draw(st.booleans())
    out = fmt.replace("%%", "\0")
    for k, v in fields.items():
        out = out.replace(f"%{k}", f"{v:04d}" if k == "Y" and pad else f"{v:02d}" if pad else str(v))
    out = out.replace("\0", "%")
    mutation = draw(st.sampled_from(["none", "none", "byte", "lead", "trail", "cut"]))
    if mutation == "byte" and out:
        i = draw(st.integers(0, len(out) - 1))
        out = out[:i] + draw(st.sampled_from(list(NEAR))) + out[i + 1:]
    elif mutation in ("lead", "trail"):
        out = " " + out if mutation == "lead" else out + " "
    elif mutation == "cut":
        out = out[:draw(st.integers(0, len(out)))]
    return out


@SETTINGS
@given(st.sampled_from(FORMATS), st.lists(st.one_of(st.none(), near_timestamps(), st.text(NEAR, max_size=20)),
                                          max_size=30))
def test_strptime_equals_arrow(fmt, values):
    text = _text(values)
    assert strptime(text, fmt).equals(pc.strptime(text, format=fmt, unit="us", error_is_null=True))


def test_strptime_outside_the_kernel_subset_is_arrows():
    text = _text(["2024-01-05 10:11 PM", "2024-01-05 10:11", None])
    fmt = "%Y-%m-%d %I:%M %p"
    assert strptime(text, fmt).equals(pc.strptime(text, format=fmt, unit="us", error_is_null=True))
    assert strptime(text, fmt).is_valid().to_pylist() == [True, False, False]


def test_kernels_on_a_large_column_agree_with_arrow():
    rng = np.random.default_rng(0)
    ids = [f"tx{i:08d}" for i in rng.integers(0, 10**8, 50_000)] + ["tx123", "TX00000001", None, ""]
    text = _text(ids)
    assert regex_match(text, "^tx[0-9]{8}$").equals(pc.match_substring_regex(text, "^tx[0-9]{8}$"))
