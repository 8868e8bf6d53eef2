"""The compiled contract kernels must give exactly Arrow's answers (RE2, strptime, casts) on any
text, including the cases they hand back to Arrow. Each property test generates values near the
boundary (right shape, one byte off, padding, out-of-range fields, non-ASCII, nulls)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlinfra_ray.contract import FLOAT_RE, INT_RE
from mlinfra_ray.contract_time import EPOCH_DIGITS, parse_arrow, parse_timestamp
from mlinfra_ray.settings import ColumnSpec
from mlinfra_ray.text_kernels import (
    ASK,
    NULL,
    PARSED,
    REJECTED,
    byte_ranges,
    dictionary_codes,
    first_format,
    fixed_pattern,
    json_objects,
    parse_number,
    regex_match,
    strict_format,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NEAR = "0123456789tuxmTZ:-/. _+eE\t\n%é"  # bytes the patterns and formats below care about


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


PATTERNS = ["^tx[0-9]{8}$", "^u[0-9]{6}$", "^[A-Z]{2}$", r"^\d{2}\.\d$", "^[a-c-]{3}$", "^x[0-9]{0}y$",
            "^[0-9]{20}$", "^[A-F]{9}$"]  # whole words; words overlapping at the end of a value


@SETTINGS
@given(st.sampled_from(PATTERNS), st.lists(st.one_of(st.none(), st.text(NEAR + "ABCDXYZabc", max_size=12),
                                                      st.from_regex(r"\Atx[0-9]{8}\Z"),
                                                      st.from_regex(r"\Au[0-9]{6}\Z"),
                                                      st.from_regex(r"\A[0-9]{20}\Z"),
                                                      st.from_regex(r"\A[A-G]{9}\Z")), max_size=40))
def test_regex_match_equals_re2(regex, values):
    text = _text(values)
    assert regex_match(text, regex).equals(pc.match_substring_regex(text, regex))


@pytest.mark.parametrize("regex", [p for p in PATTERNS if fixed_pattern(p).shape[0]])
def test_regex_match_judges_every_byte_of_a_value(regex):
    """Each position of a value the pattern accepts, set to the edges of its range and just
    past them, or to a non-ASCII character (same width in bytes): RE2's answer each time.
    (Random text seldom has the right width with one wrong byte; this hits every lane of every
    word the kernel reads.)"""
    table = fixed_pattern(regex)
    good = bytes(int(np.flatnonzero(row)[0]) for row in table)
    values = [good.decode()]
    for k, row in enumerate(table):
        allowed = np.flatnonzero(row)
        for c in {allowed[0] - 1, allowed[0], allowed[-1], allowed[-1] + 1} & set(range(1, 128)):
            values.append((good[:k] + bytes([c]) + good[k + 1:]).decode())
        for char in ("é", "ÿ", "€"):  # bytes at or above 0x80, some of them past 0x80 + a bound
            size = len(char.encode())
            if k + size <= len(table):
                values.append(good[:k].decode() + char + good[k + size:].decode())
    text = _text(values * 3)
    assert regex_match(text, regex).equals(pc.match_substring_regex(text, regex))


def test_byte_ranges_cover_every_position_once_or_give_way_to_the_table():
    at, low, high, lanes = byte_ranges("^tx[0-9]{8}$")
    assert at.tolist() == [0, 2]  # the last word ends with the value, overlapping the first
    assert int(low[0]) & 0xFF == ord("t") and int(high[1]) >> 56 == ord("9")
    assert byte_ranges("^[a-c-]{3}$") is None  # two ranges at a position: the byte table
    assert byte_ranges("^[0-9]{33}$") is None and byte_ranges("^é$") is None
    # a short value ending the buffer is read byte by byte, never past its end
    for values in (["xx", "AB"], ["AB"], ["A", "B9", "ZZ"]):
        text = _text(values)
        assert regex_match(text, "^[A-Z]{2}$").equals(pc.match_substring_regex(text, "^[A-Z]{2}$"))


def test_regex_match_on_sliced_and_empty_arrays():
    text = _text(["tx00000001", None, "", "tx1", "tx00000002"]).slice(1)
    assert regex_match(text, "^tx[0-9]{8}$").to_pylist() == [None, False, False, True]
    assert regex_match(_text([]), "^tx[0-9]{8}$").to_pylist() == []
    assert regex_match(_text([None, ""]), "^[A-Z]{0}$").to_pylist() == [None, True]


def _arrow_number(value: str | None, floating: bool) -> tuple[bool, float | int | None]:
    """Arrow's cast of one value: (parsed, value); the reference the kernel must equal. Arrow also
    reads the words nan/inf/infinity; the kernel rejects them (the contract rejects non-finite
    numbers either way, as `type:<column>`). Arrow's int cast also reads hexadecimal ("0x1F"),
    which the contract's int grammar does not (INT_RE: decimal digits only)."""
    if value is None or (not floating and not re.fullmatch(INT_RE[1:-1], value)):
        return False, None
    try:
        out = pa.scalar(value, pa.string()).cast(pa.float64() if floating else pa.int64()).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False, None
    if floating and not np.isfinite(out) and not re.fullmatch(FLOAT_RE[1:-1], value):
        return False, None
    return True, out


def _same(a, b) -> bool:
    """Equal as stored: bit patterns for floats (-0.0 is not 0.0, NaN equals NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).view(np.int64) == np.float64(b).view(np.int64)
    return a == b and type(a) is type(b)


@st.composite
def near_numbers(draw):
    """Decimal text near the kernel's edges: 1-25 digits (the exact path stops at 18 significant
    digits and 2**53), leading/trailing zeros, exponents around ±22 and far beyond, signs."""
    digits = draw(st.text("0123456789", min_size=1, max_size=25))
    text = draw(st.sampled_from(["", "-", "+", "--"])) + digits
    if draw(st.booleans()):
        text = text[:len(text) // 2] + "." + text[len(text) // 2:] + draw(st.text("0", max_size=6))
    if draw(st.booleans()):
        exp = draw(st.one_of(st.integers(-30, 30), st.integers(-400, 400), st.integers(-10**6, 10**6)))
        text += draw(st.sampled_from(["e", "E"])) + draw(st.sampled_from(["", "+"])) * (exp >= 0) + str(exp)
    return text


@SETTINGS
@given(st.booleans(), st.lists(st.one_of(st.none(), near_numbers(), st.text("0123456789+-.eE x", max_size=10),
                                         st.text(max_size=4)), max_size=40))
def test_parse_number_equals_arrow_value_by_value(floating, values):
    text = _text(values)
    got, ok = parse_number(text, floating)
    for value, parsed, kernel_ok in zip(values, got.to_pylist(), ok.to_pylist(), strict=True):
        want_ok, want = _arrow_number(value, floating)
        assert kernel_ok == want_ok, value
        assert _same(parsed, want), (value, parsed, want)


@SETTINGS
@given(st.booleans(), st.lists(st.one_of(st.none(), st.text("0123456789+-.eE x", max_size=10),
                                         st.text(max_size=4)), max_size=40))
def test_parse_number_reads_the_contract_grammar(floating, values):
    """ok == the documented grammar (FLOAT_RE / INT_RE), ints also within int64."""
    text = _text(values)
    shape = pc.fill_null(pc.match_substring_regex(text, FLOAT_RE if floating else INT_RE), False).to_pylist()
    expected = [s and (floating or -(1 << 63) <= int(v) < (1 << 63))
                for s, v in zip(shape, values, strict=True)]
    assert parse_number(text, floating)[1].to_pylist() == expected


@SETTINGS
@given(st.booleans(), st.lists(st.one_of(st.none(), st.text("0123456789+-.eE \t", max_size=10)), max_size=40))
def test_parse_number_padded_reads_the_value_without_spaces_and_tabs(floating, values):
    """`padded` == stripping spaces and tabs first (whitespace alone stays not a number)."""
    text = _text(values)
    stripped = _text([None if v is None else v.strip(" \t") for v in values])
    got, ok = parse_number(text, floating, padded=True)
    want, want_ok = parse_number(stripped, floating)
    assert ok.to_pylist() == want_ok.to_pylist()
    assert all(_same(a, b) for a, b in zip(got.to_pylist(), want.to_pylist(), strict=True))
    assert parse_number(_text([" ", "\t\t", " 1 2 "]), floating, padded=True)[1].to_pylist() == [False] * 3


def test_parse_number_edges():
    floats = ["-0", "+5", "1.", ".5", "0.1", "1e22", "9007199254740993", "1e23", "1e-400", "4.9e-324",
              "1e999", "0e999999999999", "123456789012345678901234", "0.300000000000000000000001", "-0e5",
              "nan", "1e", "."]
    got, ok = parse_number(_text(floats), floating=True)
    for value, parsed, kernel_ok in zip(floats, got.to_pylist(), ok.to_pylist(), strict=True):
        want_ok, want = _arrow_number(value, True)
        assert kernel_ok == want_ok and _same(parsed, want), value
    assert ok.to_pylist()[-3:] == [False, False, False]
    ints = ["9223372036854775807", "-9223372036854775808", "9223372036854775808", "99999999999999999999",
            "-0", "007", "+5", "1.0", ""]
    got, ok = parse_number(_text(ints), floating=False)
    assert got.to_pylist() == [2**63 - 1, -2**63, None, None, 0, 7, None, None, None]
    assert ok.to_pylist() == [True, True, False, False, True, True, False, False, False]


@pytest.mark.parametrize("fmt, supported", [
    ("%Y-%m-%dT%H:%M:%SZ", True), ("%Y-%m-%d %H:%M:%S", True), ("%d/%m/%Y %H:%M", True),
    ("%Y%m%d", True), ("%m/%d/%Y", True), ("%Y-%m-%d %%", True), ("%Y-%m-%d %I:%M %p", False),
    ("%Y-%m-%dT%H:%M:%S%z", False),
    ("%H:%M", False), ("%Y-%m-%d %Y", False), ("%Y-%m-%d é", False), ("%Y-%m-%d %H:%M:%S.%f", False),
])
def test_strict_formats(fmt, supported):
    assert (strict_format(fmt) is not None) is supported


def test_first_format_outcomes():
    text = _text(["2024-02-29T23:59:59Z", None, "2023-02-29T00:00:00Z", "05/01/2024 10:11", "1700000000",
                  " 2024-01-05T10:11:12Z", "2024-1-5T1:2:3Z", "yesterday", "12345678901",
                  "2024-01-05 10:11:12"])
    formats = ["%Y-%m-%dT%H:%M:%SZ", "%d/%m/%Y %H:%M"]
    micros, which, state = first_format(text, [EPOCH_DIGITS["epoch_s"]], formats)
    assert state.tolist() == [PARSED, NULL, ASK, PARSED, PARSED, ASK, ASK, REJECTED, REJECTED, REJECTED]
    assert which.tolist() == [0, -1, 0, 1, -1, 0, 0, -1, -1, -1]
    expected = pc.strptime(text.take([0, 3]), format="%Y-%m-%dT%H:%M:%SZ", unit="us", error_is_null=True)
    assert micros[0] == expected.cast(pa.int64())[0].as_py()
    assert micros[4] == 1_700_000_000 * 1_000_000
    _, which, state = first_format(text, [], ["%Y-%m-%d %I:%M %p", "%Y-%m-%dT%H:%M:%SZ"])  # no kernel for %I %p
    assert set(which[state == ASK]) == {0} and (state[[1]] == NULL).all()


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


COLUMNS = [
    ColumnSpec(name="t", type="timestamp", formats=["%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M",
                                                   "epoch_s", "epoch_ms"]),
    ColumnSpec(name="t", type="timestamp", formats=["%Y-%m-%d %H:%M:%S", "%m/%d/%Y", "epoch_ms"],
               timezone="Europe/Berlin"),  # local time: DST gaps and overlaps are "ambiguous"
    ColumnSpec(name="t", type="timestamp", formats=["%Y%m%d%H%M%S", "%Y-%m-%d %%", "%Y-%m-%dT%H:%M:%S%z"]),
    ColumnSpec(name="t", type="timestamp", formats=["%Y-%m-%d %I:%M %p", "%d/%m/%Y %H:%M"],
               timezone="America/New_York"),
]


@SETTINGS
@given(st.sampled_from(COLUMNS), st.lists(st.one_of(st.none(), near_timestamps(), st.text(NEAR, max_size=20),
                                                    st.integers(0, 10**14).map(str)), max_size=30))
def test_parse_timestamp_equals_arrow(col, values):
    text = _text(values)
    got, want = parse_timestamp(text, col), parse_arrow(text, col)
    assert got[0].equals(want[0]) and got[1].equals(want[1])
    assert [(m.to_pylist(), code) for m, code in got[2]] == [(m.to_pylist(), code) for m, code in want[2]]


def test_dst_local_times_are_ambiguous_either_way():
    col = COLUMNS[1]
    text = _text(["2024-10-27 02:30:00", "2024-03-31 02:30:00", "2024-06-01 12:00:00"])
    values, recognized, checks = parse_timestamp(text, col)
    assert recognized.to_pylist() == [True, True, True]
    assert values.is_valid().to_pylist() == [False, False, True]
    assert checks[0][1] == "ambiguous:t" and checks[0][0].to_pylist() == [True, True, False]


def test_kernels_on_a_large_column_agree_with_arrow():
    rng = np.random.default_rng(0)
    ids = [f"tx{i:08d}" for i in rng.integers(0, 10**8, 50_000)] + ["tx123", "TX00000001", None, ""]
    text = _text(ids)
    assert regex_match(text, "^tx[0-9]{8}$").equals(pc.match_substring_regex(text, "^tx[0-9]{8}$"))


def test_kernels_read_sliced_and_dictionary_encoded_text():
    """Arrow arrays can start mid-buffer (slices, set_nulls results); the kernels read offsets
    from the array's own start, as Arrow's kernels do."""
    base = _text(["junk", "1.5", "x", None, "2024-01-05T10:11:12Z", "05/01/2024 10:11", "1700000000"])
    text = base.slice(1)
    expected = pc.fill_null(pc.match_substring_regex(text, FLOAT_RE), False)
    assert parse_number(text, floating=True)[1].equals(expected)
    col = COLUMNS[0]
    got, want = parse_timestamp(text, col), parse_arrow(text, col)
    assert got[0].equals(want[0]) and got[0].null_count == 3
    coded = pa.array(["tx00000001", "bad", "tx00000001", None]).dictionary_encode()
    assert regex_match(coded.dictionary, "^tx[0-9]{8}$").to_pylist() == [True, False]


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.text("ab é", max_size=20), st.sampled_from(
    ["web", " WEB ", "electronics", "electronicz", "restaurants", "x" * 16, "x" * 17, "x" * 16 + "y"])),
    max_size=60), st.integers(0, 3))
def test_dictionary_codes_equal_arrow(values, cut):
    """Same dictionary (first-occurrence order) and indices as Arrow's encoder, for values up to
    8, 16 and more bytes, nulls, and arrays that start mid-buffer."""
    text = _text(values).slice(min(cut, len(values)))
    want = pc.dictionary_encode(text)
    got = dictionary_codes(text)
    assert got.dictionary.equals(want.dictionary)
    assert got.indices.equals(want.indices.cast(pa.int32()))


def test_dictionary_codes_tell_values_apart_by_every_byte_and_length():
    """The table's key is a value's first 8 bytes mixed with its length (the length shares the
    top byte): values alike in those must still get codes of their own."""
    collides = "abcdefg" + chr(ord("h") ^ 8 ^ 9) + "\x00"  # 9 bytes: the same key as "abcdefgh"
    values = ["abcdefgh", "abcdefg", "abcdefgh\x00", collides, "abcdefghX",
              "abcdefghY", "abcdefghijklmnopX", "abcdefghijklmnopY", "", "abcdefgh"]
    got = dictionary_codes(_text(values))
    assert got.indices.to_pylist() == list(range(9)) + [0]
    assert got.cast(pa.string()).to_pylist() == values


def test_dictionary_codes_give_up_past_their_limit():
    text = _text([f"v{i % 40}" for i in range(400)])
    assert dictionary_codes(text, limit=39) is None
    assert len(dictionary_codes(text, limit=40).dictionary) == 40
    many = _text([f"id{i}" for i in range(5000)])  # more than the table holds
    assert dictionary_codes(many) is None


def test_kernels_load_without_a_writable_cache_directory(tmp_path):
    """A read-only install with an unwritable home (hardened containers): numba finds nowhere to
    cache the kernels, which used to fail the import; they now cache in a per-user temp dir."""
    code = """
import tempfile, numba
from numba.core import caching
real = caching._CacheLocator.ensure_cache_path
def only_temp(self):  # every location numba tries is read-only, except the fallback
    if not self.get_cache_path().startswith(tempfile.gettempdir() + "/mlinfra-numba-"):
        raise OSError("read-only file system")
    return real(self)
caching._CacheLocator.ensure_cache_path = only_temp
import pyarrow as pa
from mlinfra_ray.text_kernels import regex_match
assert regex_match(pa.array(["tx00000001", "x"]), "^tx[0-9]{8}$").to_pylist() == [True, False]
print(numba.config.CACHE_DIR)
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith(str(tmp_path / "mlinfra-numba-"))
    assert any((tmp_path).glob("mlinfra-numba-*/**/*.nbi"))  # the kernels really were cached there


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.text(NEAR, max_size=3)), max_size=30), st.integers(0, 3))
def test_blank_to_null_equals_arrow_kernels(values, cut):
    """The contract's numpy reading of "" as missing == its Arrow-kernel form (also on slices)."""
    from mlinfra_ray.contract import _blank_to_null
    from mlinfra_ray.contract_time import set_nulls

    for text in (_text(values), _text(values).slice(min(cut, len(values)))):
        expected = set_nulls(text, pc.greater(pc.binary_length(text), 0))
        got, present = _blank_to_null(text)
        assert got.to_pylist() == expected.to_pylist() and got.null_count == expected.null_count
        assert present.to_pylist() == pc.is_valid(expected).to_pylist()


@SETTINGS
@given(st.lists(st.text(max_size=6), min_size=1, max_size=4, unique=True),
       st.data())
def test_json_objects_load_back_to_the_values(names, data):
    """Any names and values (control characters, quotes, backslashes, non-ASCII, nulls): each row's
    object is valid JSON holding exactly its values, keys in column order."""
    rows = data.draw(st.integers(0, 8))
    columns = [data.draw(st.lists(st.one_of(st.none(), st.text(max_size=8)), min_size=rows, max_size=rows))
               for _ in names]
    got = json_objects(names, _text([v for column in columns for v in column])).to_pylist()
    assert [list(json.loads(o).items()) for o in got] == \
        [[(n, column[i]) for n, column in zip(names, columns, strict=True)] for i in range(rows)]
