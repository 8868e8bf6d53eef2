"""Compiled scans (numba) over Arrow string buffers for the contract's hottest checks.

Arrow's RE2 and strptime kernels pay for their generality on every value (measured on one 16 MB
split, 220k values: 7 ms per id regex, 8 ms per strptime format). The rules a contract usually
declares are simpler: fixed-width ids like `^tx[0-9]{8}$`, zero-padded timestamp formats, epoch
digits, plain decimal numbers. These kernels decide those cases in one pass over the bytes
(1.5 ms for the same id column) and hand everything else back to Arrow, so a result is always
the one Arrow would give: each kernel is property-tested against RE2 / strptime / Arrow's casts
/ Arrow's dictionary encoder (tests/unit/test_text_kernels.py). Bytes are read through unsigned
indices where it counts: numba tests every signed index for negative wraparound, which costs
a branch per byte and keeps LLVM from merging neighbouring loads.

numba is imported here, and this module is imported lazily, on the first batch that needs it.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba.core import caching

from mlinfra_ray.bitmaps import boolean, masked, valid


def _cache_probe() -> None:
    """Stands in for the kernels below when asking numba where it could cache them."""


def _ensure_cache_location() -> None:
    """`cache=True` makes numba look for a writable directory when a kernel is *defined* (here,
    on import): $NUMBA_CACHE_DIR, else __pycache__ next to this file, else the user's cache
    directory; with none (a read-only install and an unwritable home, as in hardened containers)
    the import fails. Then use a per-user temp directory. Asks numba's own locators (the same
    write test it makes), so the answer cannot drift from numba's."""
    if any(cls.from_function(_cache_probe, __file__) is not None for cls in caching.CacheImpl._locator_classes):
        return
    numba.config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"mlinfra-numba-{os.getuid()}")


_ensure_cache_location()

NULL, PARSED, REJECTED, ASK = 0, 1, 2, 3  # per-value outcome of a timestamp kernel
# strptime directives the strict timestamp kernel reads: (field slot, digits)
DIRECTIVES = {"Y": (0, 4), "m": (1, 2), "d": (2, 2), "H": (3, 2), "M": (4, 2), "S": (5, 2)}
META = set(".^$*+?()[]{}|\\")


def buffers(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int32 offsets, bytes) of a text array, zero-copy for `string` and `binary`."""
    if not (pa.types.is_string(text.type) or pa.types.is_binary(text.type)):  # same layout
        text = text.cast(pa.string())
    n = len(text)
    bufs = text.buffers()
    off = np.frombuffer(bufs[1], np.int32, n + 1, text.offset * 4) if n else np.zeros(1, np.int32)
    data = np.frombuffer(bufs[2], np.uint8) if len(bufs) > 2 and bufs[2] is not None else np.zeros(1, np.uint8)
    return off, data


@numba.njit(cache=True, nogil=True)
def _load8(data, u):
    """data[u:u + 8] as a little-endian word; `u` an np.uint64 the caller knows to be in bounds.
    Unsigned indices: numba tests every signed index for negative wraparound, a branch per byte
    that also keeps LLVM from merging the eight loads into one."""
    one = np.uint64(1)
    return (np.uint64(data[u]) | (np.uint64(data[u + one]) << np.uint64(8))
            | (np.uint64(data[u + np.uint64(2)]) << np.uint64(16))
            | (np.uint64(data[u + np.uint64(3)]) << np.uint64(24))
            | (np.uint64(data[u + np.uint64(4)]) << np.uint64(32))
            | (np.uint64(data[u + np.uint64(5)]) << np.uint64(40))
            | (np.uint64(data[u + np.uint64(6)]) << np.uint64(48))
            | (np.uint64(data[u + np.uint64(7)]) << np.uint64(56)))


@numba.njit(cache=True, nogil=True, inline="always")  # as a call (its byte loop keeps LLVM
# from inlining it), fnv64 took 0.55 ms instead of 0.30, the dictionary encoder 2.2 instead of 1.4
def _word(data, p, m):
    """The m (<= 8) bytes at data[p:] as a little-endian word (zero above them)."""
    if p + 8 <= len(data):
        w = _load8(data, np.uint64(p))
        if m < 8:
            w &= (np.uint64(1) << np.uint64(8 * m)) - np.uint64(1)
        return w
    w = np.uint64(0)
    for j in range(m):
        w |= np.uint64(data[p + j]) << np.uint64(8 * j)
    return w


# --- regexes ----------------------------------------------------------------------------------

def regex_match(text: pa.Array, regex: str) -> pa.Array:
    """`pc.match_substring_regex(text, regex)`, through a byte table when the regex is a
    fixed-width sequence of ASCII literals and classes (null stays null); 8 bytes at a time when
    each position allows one range of bytes (`^tx[0-9]{8}$`, `^[A-Z]{2}$`)."""
    table = fixed_pattern(regex)
    if table is None:
        return pc.match_substring_regex(text, regex)
    off, data = buffers(text)
    words = byte_ranges(regex)
    hits = _match_fixed(off, data, table) if words is None else _match_ranges(off, data, *words, table.shape[0])
    return boolean(hits, valid(text) if text.null_count else None)


@lru_cache(maxsize=256)
def byte_ranges(regex: str) -> tuple[np.ndarray, ...] | None:
    """For a fixed pattern whose every position allows one range of ASCII bytes (up to 32
    positions): the words a value is read as — (offset in the value, low bytes, high bytes,
    lanes in use) per word, little-endian, 8 positions a word; a value longer than 8 bytes is
    read as whole words, the last one ending at its end (overlapping the one before). None
    otherwise (the byte table decides those)."""
    table = fixed_pattern(regex)
    width = 0 if table is None else table.shape[0]
    if not 0 < width <= 32:
        return None
    ranges = []
    for k in range(width):
        allowed = np.flatnonzero(table[k])
        if not len(allowed) or allowed[-1] >= 128 or allowed[-1] - allowed[0] + 1 != len(allowed):
            return None
        ranges.append((int(allowed[0]), int(allowed[-1])))
    starts = [0] if width <= 8 else sorted({*range(0, width - 7, 8), width - 8})
    at, low, high, lanes = (np.zeros(len(starts), t) for t in (np.int64, np.uint64, np.uint64, np.uint64))
    for j, start in enumerate(starts):
        at[j] = start
        for lane, k in enumerate(range(start, min(start + 8, width))):
            low[j] |= np.uint64(ranges[k][0] << (8 * lane))
            high[j] |= np.uint64(ranges[k][1] << (8 * lane))
            lanes[j] |= np.uint64(0x80 << (8 * lane))
    return at, low, high, lanes


@numba.njit(cache=True, nogil=True)
def _match_ranges(off, data, at, low, high, lanes, width):
    """Per value: its width, then low <= byte <= high in every lane of every word, in SWAR:
    with 0x80 set in each lane, (x | 0x80) - low and (high | 0x80) - x keep 0x80 exactly where
    the byte is in range and no lane borrows from the next (bytes and bounds below 0x80; a byte
    at or above it fails its own lane through ~x, whatever it does to the lanes above). 0.94 ->
    0.39 ms per 165k ten-byte ids, against a table lookup per byte."""
    n = len(off) - 1
    out = np.empty(n, np.bool_)
    top = np.uint64(0x8080808080808080)
    size = min(width, 8)  # a value of 8 bytes or more is read in whole words
    for i in range(n):
        a = off[i]
        ok = off[i + 1] - a == width
        bad = np.uint64(0)
        if ok:
            for j in range(len(at)):
                x = _word(data, a + at[j], size)
                inside = ((x | top) - low[j]) & ((high[j] | top) - x) & ~x
                bad |= (inside & lanes[j]) ^ lanes[j]
        out[i] = ok and bad == 0
    return out


@lru_cache(maxsize=256)
def fixed_pattern(regex: str) -> np.ndarray | None:
    """A (width, 256) table — position × byte → allowed — for `^…$` patterns made of ASCII
    literals, `\\d`, escaped punctuation and `[...]` classes (ranges, no negation), each at most
    repeated `{n}` times; None for anything else (alternation, `*`, `+`, `?`, `.`, flags, …),
    which then stays with RE2. RE2 reads `$` as end of text, so `^…$` means exactly this width."""
    if len(regex) < 2 or regex[0] != "^" or regex[-1] != "$" or regex.endswith("\\$"):
        return None
    body, i, rows = regex[1:-1], 0, []
    while i < len(body):
        atom, i = _atom(body, i)
        if atom is None:
            return None
        count, i = _repeat(body, i)
        if count is None:
            return None
        rows += [atom] * count
    table = np.zeros((len(rows), 256), np.bool_)
    for k, allowed in enumerate(rows):
        table[k, sorted(allowed)] = True
    return table


def _atom(body: str, i: int) -> tuple[set[int] | None, int]:
    c = body[i]
    if c == "\\":
        return _escape(body, i + 1)
    if c == "[":
        return _class(body, i + 1)
    if c in META or not _plain(c):
        return None, i
    return {ord(c)}, i + 1


def _escape(body: str, i: int) -> tuple[set[int] | None, int]:
    if i >= len(body):
        return None, i
    c = body[i]
    if c == "d":
        return set(range(48, 58)), i + 1
    if _plain(c) and not c.isalnum() and c != "_":  # \. \- \/ …: the character itself
        return {ord(c)}, i + 1
    return None, i  # \w \s \b \D \x41 …: left to RE2


def _class(body: str, i: int) -> tuple[set[int] | None, int]:
    if i >= len(body) or body[i] in "^]":  # negated (matches multi-byte characters) or odd: RE2
        return None, i
    allowed: set[int] = set()
    while i < len(body) and body[i] != "]":
        if body[i] == "\\":
            part, i = _escape(body, i + 1)
            if part is None:
                return None, i
            allowed |= part
            continue
        c = body[i]
        if c == "[" or not _plain(c):  # [[:alpha:]] and other RE2 forms
            return None, i
        if i + 2 < len(body) and body[i + 1] == "-" and body[i + 2] != "]":
            hi = body[i + 2]
            if hi == "\\" or not _plain(hi) or ord(hi) < ord(c):
                return None, i
            allowed |= set(range(ord(c), ord(hi) + 1))
            i += 3
        else:
            allowed.add(ord(c))
            i += 1
    if i >= len(body):
        return None, i
    return allowed, i + 1


def _repeat(body: str, i: int) -> tuple[int | None, int]:
    if i >= len(body) or body[i] not in "{*+?":
        return 1, i
    end = body.find("}", i)
    if body[i] != "{" or end < 0 or not body[i + 1:end].isdigit() or len(body[i + 1:end]) > 3:
        return None, i  # ranges {m,n} and open repeats change the width: RE2
    return int(body[i + 1:end]), end + 1


def _plain(c: str) -> bool:
    return 32 <= ord(c) < 127


@numba.njit(cache=True, nogil=True)
def _match_fixed(off, data, table):
    n, width = len(off) - 1, table.shape[0]
    out = np.empty(n, np.bool_)
    for i in range(n):
        a = off[i]
        ok = off[i + 1] - a == width
        k = 0
        while ok and k < width:
            ok = table[k, data[a + k]]
            k += 1
        out[i] = ok
    return out


def edge_bytes(text: pa.Array) -> bool:
    """Does any value start or end with a byte <= 32 or >= 127 (whitespace, or non-ASCII that
    might be Unicode whitespace)? Stops at the first one."""
    if len(text) == 0:
        return False
    return bool(_edge_bytes(*buffers(text)))


@numba.njit(cache=True, nogil=True)
def _edge_bytes(off, data):
    for i in range(len(off) - 1):
        a, b = off[i], off[i + 1]
        if b > a:
            x, y = data[a], data[b - 1]
            if x <= 32 or x >= 127 or y <= 32 or y >= 127:
                return True
    return False


def fnv64(text: pa.Array, seed: np.uint64, prime: np.uint64) -> np.ndarray:
    """uint64 per value: FNV-style mixing of its bytes read as little-endian 8-byte words, the
    length folded into the seed (nulls hash like the empty string). See mlinfra_ray/fingerprint.py."""
    return _fnv64(*buffers(text), np.uint64(seed), np.uint64(prime))


@numba.njit(cache=True, nogil=True)
def _fnv64(off, data, seed, prime):
    n = len(off) - 1
    out = np.empty(n, np.uint64)
    shift = np.uint64(29)
    for i in range(n):
        a, b = off[i], off[i + 1]
        h = (seed ^ np.uint64(b - a)) * prime
        p = a
        while p + 8 <= b:  # whole words (`_load8`: one load each): 1.51 -> 0.30 ms per 165k
            # ten-byte ids, against a loop of variable length over the bytes
            word = _load8(data, np.uint64(p))
            mixed = (h ^ word) * prime
            h = mixed ^ (mixed >> shift)
            p += 8
        if p < b:  # the last, partial word
            word = _word(data, p, b - p)
            mixed = (h ^ word) * prime
            h = mixed ^ (mixed >> shift)
        out[i] = h
    return out


# --- numbers ----------------------------------------------------------------------------------

def parse_number(text: pa.Array, floating: bool, padded: bool = False) -> tuple[pa.Array, pa.Array]:
    """(values, ok): `text` read as float64 (`floating`) or int64 exactly as Arrow's cast reads it,
    value by value. ok is false for null and for text outside the grammar — the float grammar
    `^[+-]?(\\d+(\\.\\d*)?|\\.\\d+)([eE][+-]?\\d+)?$` or the int grammar `^-?\\d+$` (Arrow's
    own, less the hexadecimal `0x1F` its int cast also reads) — and for an int outside int64;
    its value is then null. One bad value never fails the column (Arrow's cast raises for the
    whole array). `padded`: spaces and tabs around a value are ignored (what pyarrow's CSV reader
    does when it types a number itself); whitespace alone is still not a number.

    Exactness: up to 18 significant digits an int is exact in int64; a float whose significant
    digits w ≤ 2**53 and a decimal exponent e in [-22, 22] is w·10**e, and w and 10**|e|
    are both exact doubles, so one IEEE multiply or divide is correctly rounded (Clinger's fast
    path, the one Arrow's parser takes too). Anything else (long digit strings, big exponents,
    subnormals) is handed to Arrow's cast (ints to Python's int: same grammar, same range)."""
    off, data = buffers(text)
    values = np.zeros(len(off) - 1, np.float64 if floating else np.int64)
    state = _number(off, data, valid(text), floating, padded, values)
    ask = np.flatnonzero(state == ASK)
    if len(ask):  # rare: settle each value the way Arrow would
        strings = text.take(pa.array(ask)).cast(pa.string()).to_pylist()
        strings = [v.strip(" \t") for v in strings] if padded else strings
        if floating:
            for i, s in zip(ask, strings, strict=True):
                try:
                    values[i], state[i] = pa.scalar(s).cast(pa.float64()).as_py(), PARSED
                except pa.ArrowInvalid:
                    state[i] = REJECTED
        else:
            for i, s in zip(ask, strings, strict=True):
                v = int(s)
                if -(1 << 63) <= v < (1 << 63):
                    values[i], state[i] = v, PARSED
                else:
                    state[i] = REJECTED
    ok = state == PARSED
    return masked(values, pa.float64() if floating else pa.int64(), ok), boolean(ok)


POW10 = np.array([10.0 ** k for k in range(23)])  # all exact doubles


@numba.njit(cache=True, nogil=True)
def _digits(data, p, end):
    """Index after the run of ASCII digits starting at p."""
    while p < end and 48 <= data[np.uint64(p)] <= 57:
        p += 1
    return p


@numba.njit(cache=True, nogil=True)
def _number(off, data, valid, floating, padded, values):
    # bytes read as data[np.uint64(...)]: no negative-index wraparound test per byte (amount,
    # 165k values: 2.07 -> 1.67 ms)
    n = len(off) - 1
    state = np.zeros(n, np.int8)  # NULL (also: outside the grammar), PARSED, REJECTED, ASK
    pow10 = POW10
    for i in range(n):
        if not valid[i]:
            continue
        p, end = off[i], off[i + 1]
        state[i] = REJECTED
        if padded:
            while p < end and (data[np.uint64(p)] == 32 or data[np.uint64(p)] == 9):
                p += 1
            while end > p and (data[np.uint64(end - 1)] == 32 or data[np.uint64(end - 1)] == 9):
                end -= 1
        neg = p < end and data[np.uint64(p)] == 45  # -
        if p < end and (neg or (floating and data[np.uint64(p)] == 43)):  # - or (float) +
            p += 1
        w, sig, e10, long = 0, 0, 0, False  # mantissa, its significant digits, exponent
        q = _digits(data, p, end)
        whole = q > p
        for j in range(p, q):
            d = data[np.uint64(j)] - 48
            if sig < 18:  # 18 digits cannot overflow int64
                w = w * 10 + d
                sig += 1 if (sig or d) else 0
            else:
                long = True
                e10 += 1
        p = q
        if not floating:
            if not whole or p != end:
                continue
            if long:
                state[i] = ASK
            else:
                values[i], state[i] = -w if neg else w, PARSED
            continue
        frac = False
        if p < end and data[np.uint64(p)] == 46:  # .
            q = _digits(data, p + 1, end)
            frac = q > p + 1
            for j in range(p + 1, q):
                d = data[np.uint64(j)] - 48
                if sig < 18:
                    w = w * 10 + d
                    sig += 1 if (sig or d) else 0
                    e10 -= 1
                elif d:
                    long = True
            p = q
        if not (whole or frac):
            continue
        if p < end and (data[np.uint64(p)] == 101 or data[np.uint64(p)] == 69):  # e E
            p += 1
            eneg = p < end and data[np.uint64(p)] == 45
            if p < end and (eneg or data[np.uint64(p)] == 43):
                p += 1
            q = _digits(data, p, end)
            if q == p:
                continue
            e = 0
            for j in range(p, q):
                if e < 100000:  # beyond any double's range either way: Arrow decides
                    e = e * 10 + data[np.uint64(j)] - 48
            e10 += -e if eneg else e
            p = q
        if p != end:
            continue
        if w == 0 and not long:
            values[i], state[i] = -0.0 if neg else 0.0, PARSED
        elif long or w > 9007199254740992 or e10 < -22 or e10 > 22:
            state[i] = ASK
        else:
            v = w * pow10[e10] if e10 >= 0 else w / pow10[-e10]
            values[i], state[i] = -v if neg else v, PARSED
    return state


# --- timestamps -------------------------------------------------------------------------------

def first_format(text: pa.Array, epochs: list[tuple[int, int, int]],
                 formats: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which declared format reads each value, in one pass: (µs, format, outcome) per value.

    Epochs first: ASCII digits only, the digit count in a (min, max, µs per unit) range of
    `epochs` → UTC µs, format -1. Then `formats` in order: a zero-padded value of the format
    (fields in range; leap seconds, year 0 and impossible dates excepted) → naive µs, exactly as
    strptime reads it; a value lacking one of the format's non-space literals → next format
    (strptime, glibc and musl alike, must match such a literal exactly); anything else, or a
    format outside the kernel's subset → ASK (only strptime can judge it). Outcome NULL for
    null, PARSED, REJECTED (no format can read it) or ASK."""
    off, data = buffers(text)
    spec = np.array(epochs, np.int64).reshape(-1, 3)
    compiled = [strict_format(f) for f in formats]
    k_formats = len(formats)
    nreq = max([len(c[1]) for c in compiled if c is not None] + [1])
    nlit = max([int(np.sum(c[0][:, 0] < 0)) for c in compiled if c is not None] + [1])
    fields = np.zeros((k_formats, 6, 2), np.int64)  # per format and field (Y m d H M S): (position, digits)
    literals = np.zeros((k_formats, nlit, 2), np.int64)  # per format: (position, byte) of its literals
    required = np.zeros((k_formats, nreq), np.uint8)
    sizes = np.full((k_formats, 3), -1, np.int64)  # (width, literal count, required count); -1: no kernel
    for k, c in enumerate(compiled):
        if c is None:
            continue
        lits = [(j, byte) for j, (slot, byte) in enumerate(c[0]) if slot < 0]
        if lits:
            literals[k, :len(lits)] = lits
        for slot in range(6):  # a field's digits are adjacent (each directive appears once)
            at = np.flatnonzero(c[0][:, 0] == slot)
            fields[k, slot] = (at[0], len(at)) if len(at) else (0, 0)
        required[k, :len(c[1])] = c[1]
        sizes[k] = len(c[0]), len(lits), len(c[1])
    return _first_format(off, data, valid(text), spec, fields, literals, required, sizes)


@lru_cache(maxsize=64)
def strict_format(fmt: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(layout, required bytes) for a strptime format made of %Y %m %d (each once) and optional
    %H %M %S, %%, and printable ASCII literals; None for any other directive (the kernel then
    asks strptime about every value).

    layout: one row per byte of the strict (zero-padded) form — (field slot or -1, literal byte).
    required: the format's non-space literal bytes. strptime (glibc and musl alike) must match a
    non-space literal character exactly, so a value lacking one can never parse with the format."""
    rows: list[tuple[int, int]] = []
    required: set[int] = set()
    seen: set[str] = set()
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%":
            d = fmt[i + 1] if i + 1 < len(fmt) else ""
            if d == "%":
                rows.append((-1, ord("%")))
                required.add(ord("%"))
            elif d in DIRECTIVES and d not in seen:
                seen.add(d)
                slot, digits = DIRECTIVES[d]
                rows += [(slot, 0)] * digits
            else:
                return None
            i += 2
            continue
        if not _plain(c):
            return None
        rows.append((-1, ord(c)))
        if not c.isspace():
            required.add(ord(c))
        i += 1
    if not {"Y", "m", "d"} <= seen:
        return None
    return np.array(rows, np.int64).reshape(-1, 2), np.array(sorted(required), np.uint8)


@numba.njit(cache=True, nogil=True)
def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= 1 if m <= 2 else 0
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


@numba.njit(cache=True, nogil=True, inline="always")
def _field(data, p, digits):
    """The number in data[p:p + digits], or -1 if a byte is not an ASCII digit."""
    v = 0
    u = np.uint64(p)  # unsigned indices: no negative-index wraparound test per byte (the whole
    # kernel: 4.4 -> 3.95 ms per 165k values)
    for j in range(digits):
        d = data[u + np.uint64(j)] - np.uint8(48)  # wraps below "0"
        if d > 9:
            return -1
        v = v * 10 + d
    return v


@numba.njit(cache=True, nogil=True)
def _first_format(off, data, valid, epochs, fields, literals, required, sizes):
    n = len(off) - 1
    values, which, state = np.zeros(n, np.int64), np.full(n, -1, np.int8), np.zeros(n, np.int8)
    seen = np.full(256, -1, np.int64)
    # Values visited grouped by length (a counting sort; lengths past 32 share a group): in a
    # column of mixed formats, value after value took other branches than the one before (165k
    # values of the fraud data's five formats: 5.0 -> 4.2 ms).
    start = np.zeros(34, np.int64)
    for i in range(n):
        start[min(off[i + 1] - off[i], 32) + 1] += 1
    for w in range(1, 34):
        start[w] += start[w - 1]
    order = np.empty(n, np.int64)
    for i in range(n):
        w = min(off[i + 1] - off[i], 32)
        order[start[w]] = i
        start[w] += 1
    for i in order:
        if not valid[i]:
            continue
        a, b = off[i], off[i + 1]
        if epochs.shape[0] and a < b <= a + 18:  # 18 digits fit int64; digits read in the same pass
            v, p = 0, a
            while p < b and 48 <= data[p] <= 57:
                v = v * 10 + (data[p] - 48)
                p += 1
            if p == b:
                factor = 0
                for r in range(epochs.shape[0]):
                    if epochs[r, 0] <= b - a <= epochs[r, 1]:
                        factor = epochs[r, 2]
                        break
                if factor and v <= 9223372036854775807 // factor:
                    values[i], state[i] = v * factor, 1
                    continue
        state[i] = 2
        seen_done = False
        for k in range(sizes.shape[0]):
            width, nlit, nreq = sizes[k, 0], sizes[k, 1], sizes[k, 2]
            if width < 0:  # no kernel for this format
                which[i], state[i] = k, 3
                break
            if b - a == width:  # literals at their places, then each field's digits
                ok = True
                for t in range(nlit):
                    if data[a + literals[k, t, 0]] != literals[k, t, 1]:
                        ok = False
                        break
                if ok:
                    y = _field(data, a + fields[k, 0, 0], fields[k, 0, 1])
                    mo = _field(data, a + fields[k, 1, 0], fields[k, 1, 1])
                    d = _field(data, a + fields[k, 2, 0], fields[k, 2, 1])
                    hh = _field(data, a + fields[k, 3, 0], fields[k, 3, 1])
                    mi = _field(data, a + fields[k, 4, 0], fields[k, 4, 1])
                    ss = _field(data, a + fields[k, 5, 0], fields[k, 5, 1])
                    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
                    short = mo == 4 or mo == 6 or mo == 9 or mo == 11
                    dim = (29 if leap else 28) if mo == 2 else 30 if short else 31
                    if y >= 1 and 1 <= mo <= 12 and 1 <= d <= dim and 0 <= hh <= 23 and 0 <= mi <= 59 \
                            and 0 <= ss <= 59:
                        seconds = _days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss
                        values[i], which[i], state[i] = seconds * 1_000_000, k, 1
                        break
            if not seen_done:  # which bytes the value holds, once (most values never need it);
                # stamped with the value's index, so the table never needs clearing
                for p in range(a, b):
                    seen[data[p]] = i
                seen_done = True
            missing = False
            for r in range(nreq):
                if seen[required[k, r]] != i:
                    missing = True
                    break
            if not missing:
                which[i], state[i] = k, 3
                break
    return values, which, state


# --- dictionary encoding ----------------------------------------------------------------------

CODES_LIMIT = 2048  # distinct values per batch the encoder takes (its table holds at most this many)


def dictionary_codes(text: pa.Array, limit: int = CODES_LIMIT) -> pa.DictionaryArray | None:
    """`text` dictionary-encoded (int32 indices, values in order of first occurrence, nulls as
    null indices: what `pc.dictionary_encode` and pyarrow's CSV reader give), or None when it
    holds more than `limit` (at most CODES_LIMIT) distinct values. For the contract's
    categorical columns: encoding them here takes 1.4 ms per 165k rows for three columns of the
    fraud data, where pyarrow's CSV reader took 5 ms more to encode them itself."""
    off, data = buffers(text)
    ok = valid(text)
    codes, first, fits = _codes(off, data, ok, limit)
    if not fits:
        return None
    index = pa.array(codes, mask=~ok) if text.null_count else pa.array(codes)
    values = text.take(pa.array(first)) if len(first) else pa.array([], text.type)
    return pa.DictionaryArray.from_arrays(index, values.cast(pa.string()), safe=False)  # in range: built here


@numba.njit(cache=True, nogil=True)
def _codes(off, data, valid, limit):
    """(code per value, first row of each code, fits): open addressing over a fixed table of
    4096 slots (48 KB: stays in cache), keyed by a value's first 8 bytes and its length, which
    identify values of up to 8 bytes; longer ones compare their second word, then the rest."""
    n = len(off) - 1
    codes = np.zeros(n, np.int32)
    bits = 12
    mask = (1 << bits) - 1
    slot_code = np.full(1 << bits, -1, np.int32)
    slot_key = np.zeros(1 << bits, np.uint64)
    first = np.empty(min(limit, (mask + 1) // 2), np.int64)  # load factor <= 1/2
    size = np.empty(len(first), np.int64)  # per code: byte length (the key's top byte mixes both)
    second = np.empty(len(first), np.uint64)  # per code: bytes 8-15
    golden, shift = np.uint64(0x9E3779B97F4A7C15), np.uint64(64 - bits)
    k = 0
    for i in range(n):
        if not valid[i]:
            continue
        a = off[i]
        m = off[i + 1] - a
        key = _word(data, a, min(m, 8)) ^ (np.uint64(m) << np.uint64(56))
        more = _word(data, a + 8, min(m - 8, 8)) if m > 8 else np.uint64(0)
        s = np.int64((key * golden) >> shift)
        while True:
            c = slot_code[s]
            if c < 0:  # a new value
                if k == len(first):
                    return codes, first[:0], False
                c = k
                slot_code[s], slot_key[s] = c, key
                first[c], size[c], second[c] = i, m, more
                k += 1
                break
            if slot_key[s] == key and size[c] == m and second[c] == more:
                if m <= 16:
                    break
                f = off[first[c]]
                same = True
                for j in range(16, m):
                    if data[f + j] != data[a + j]:
                        same = False
                        break
                if same:
                    break
            s = (s + 1) & mask
        codes[i] = c
    return codes, first[:k], True


# --- quarantine rows --------------------------------------------------------------------------

def json_objects(names: list[str], values: pa.Array) -> pa.Array:
    """One JSON object per row, `{"name": "value" or null, ...}`, from `values`: the columns'
    text concatenated column after column (len(names) × rows values). Strings are escaped as JSON
    requires (`\\"`, `\\\\`, `\\b \\f \\n \\r \\t`, other control characters as `\\u00XX`, as json.dumps
    writes them); other characters stay UTF-8. Two passes over the bytes: lengths, then output."""
    k = len(names)
    rows = len(values) // k if k else 0
    keys = [("{" if j == 0 else ", ") + json.dumps(name) + ": " for j, name in enumerate(names)]
    key_data = np.frombuffer("".join(keys).encode(), np.uint8)
    key_off = np.cumsum([0] + [len(key.encode()) for key in keys]).astype(np.int64)
    off, data = buffers(values)
    out_off, out = _json_objects(off, data, valid(values), k, rows, key_off, key_data)
    return pa.Array.from_buffers(pa.string(), rows, [None, pa.py_buffer(out_off), pa.py_buffer(out)])


SHORT_ESCAPES = np.zeros(256, np.uint8)  # byte → the letter after "\\" in its JSON escape, or 0
SHORT_ESCAPES[[34, 92, 8, 9, 10, 12, 13]] = np.frombuffer(b'"\\btnfr', np.uint8)


@numba.njit(cache=True, nogil=True)
def _escaped(c):
    """Bytes a JSON string needs for byte c."""
    return 2 if SHORT_ESCAPES[c] else 6 if c < 32 else 1


@numba.njit(cache=True, nogil=True)
def _json_objects(off, data, valid, k, rows, key_off, key_data):
    # the byte loops index through np.uint64: no negative-index test per byte (0.77 -> 0.54 ms
    # for a split's 2.4k quarantined rows of 11 values)
    out_off = np.zeros(rows + 1, np.int32)
    for i in range(rows):
        size = 1  # the closing brace
        for j in range(k):
            size += key_off[j + 1] - key_off[j]
            v = j * rows + i
            if not valid[v]:
                size += 4  # null
                continue
            size += 2
            for p in range(off[v], off[v + 1]):
                size += _escaped(data[np.uint64(p)])
        out_off[i + 1] = out_off[i] + size
    out = np.empty(out_off[rows], np.uint8)
    hexdigits = np.frombuffer(b"0123456789abcdef", np.uint8)
    for i in range(rows):
        w = out_off[i]
        for j in range(k):
            for p in range(key_off[j], key_off[j + 1]):
                out[np.uint64(w)] = key_data[np.uint64(p)]
                w += 1
            v = j * rows + i
            if not valid[v]:
                out[w], out[w + 1], out[w + 2], out[w + 3] = 110, 117, 108, 108  # null
                w += 4
                continue
            out[w] = 34
            w += 1
            for p in range(off[v], off[v + 1]):
                c = data[np.uint64(p)]
                size = _escaped(c)
                if size == 1:
                    out[np.uint64(w)] = c
                elif size == 2:
                    out[w], out[w + 1] = 92, SHORT_ESCAPES[c]
                else:
                    out[w], out[w + 1], out[w + 2], out[w + 3] = 92, 117, 48, 48  # \u00
                    out[w + 4], out[w + 5] = hexdigits[c >> 4], hexdigits[c & 15]
                w += size
            out[w] = 34
            w += 1
        out[w] = 125  # }
    return out_off, out
