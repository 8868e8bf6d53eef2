"""64-bit fingerprints of key columns, computed with numpy over Arrow's buffers (no Python per
value), so that deduplication can run on integers: sort, find repeated fingerprints, then compare
the few candidate keys exactly. A collision can only add a candidate, never drop or merge a row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

PRIME = np.uint64(0x100000001B3)
SEED = np.uint64(0xCBF29CE484222325)
FULL = np.uint64(0xFFFFFFFFFFFFFFFF)
PREFIX_BITS = 22


def fingerprint(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 per value (nulls hash like the empty string; callers only pass non-null keys)."""
    if isinstance(arr, pa.ChunkedArray):
        parts = [fingerprint(c) for c in arr.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)
    if pa.types.is_dictionary(arr.type):
        return fingerprint(arr.dictionary)[arr.indices.fill_null(0).to_numpy(zero_copy_only=False)] \
            if len(arr.dictionary) else np.zeros(len(arr), np.uint64)
    if pa.types.is_integer(arr.type):  # integer keys are their own fingerprint
        return arr.fill_null(0).cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
    if not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
        arr = arr.cast(pa.string())
    return _hash_strings(arr)


def _hash_strings(arr: pa.Array) -> np.ndarray:
    """FNV-style mixing of each string's bytes, read as 8-byte words at any alignment."""
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.uint64)
    off = np.frombuffer(arr.buffers()[1], np.int32, n + 1, arr.offset * 4).astype(np.int64)
    buf = arr.buffers()[2]
    data = np.frombuffer(buf, np.uint8) if buf is not None else np.zeros(0, np.uint8)
    starts, lens = off[:-1], off[1:] - off[:-1]
    width = int(lens.max())
    if lens.min() == width:  # fixed-width keys (ids): the bytes are one n x L matrix
        return _hash_fixed(data[off[0]:off[-1]], n, width)
    filled = lens == width
    if np.all(filled | (lens == 0)):  # fixed-width keys and null/empty slots (rows quarantined for a
        # missing key): empty slots hold no bytes, so the others still form one matrix (measured:
        # 10.6 ms → ~2 ms per 220k ids; before, one null sent the column down the general path)
        h = np.full(n, _hash_fixed(data[:0], 1, 0)[0], np.uint64)  # the empty string's value
        h[filled] = _hash_fixed(data[off[0]:off[-1]], int(filled.sum()), width)
        return h
    words = np.zeros((len(data) + 23) // 8 * 8, np.uint8)
    words[:len(data)] = data
    words = words.view(np.uint64)  # little-endian words; fingerprints never leave the process
    with np.errstate(over="ignore"):
        h = (SEED ^ lens.astype(np.uint64)) * PRIME
        for w in range(int(-(-lens.max() // 8))):
            keep = np.clip(lens - 8 * w, 0, 8).astype(np.uint64)
            p = starts + 8 * w
            q = np.minimum(p >> 3, len(words) - 2)  # past a short string's end: masked below
            r = ((p & 7) * 8).astype(np.uint64)
            word = (words[q] >> r) | ((words[q + 1] << (np.uint64(63) - r)) << np.uint64(1))
            word &= np.where(keep >= 8, FULL, (np.uint64(1) << (keep * np.uint64(8))) - np.uint64(1))
            mixed = (h ^ word) * PRIME
            h = np.where(keep > 0, mixed ^ (mixed >> np.uint64(29)), h)  # only a string's own words
    return h


def repeated(fp: np.ndarray) -> np.ndarray:
    """Mask of positions whose fingerprint occurs more than once (sort-based: fast on integers)."""
    if len(fp) < 2:
        return np.zeros(len(fp), bool)
    s = np.sort(fp)
    twice = np.unique(s[1:][s[1:] == s[:-1]])
    mask = np.zeros(len(fp), bool)
    if not len(twice):
        return mask
    # A bitmap over the top 22 bits narrows 2.7M lookups to a few thousand before the exact test
    # (np.isin alone argsorts everything once `twice` has more than a handful of values).
    shift = np.uint64(64 - PREFIX_BITS)
    bitmap = np.zeros(1 << PREFIX_BITS, bool)
    bitmap[(twice >> shift).view(np.int64)] = True  # < 2**22: the same value, no 21 MB copy
    maybe = np.flatnonzero(bitmap[(fp >> shift).view(np.int64)])
    mask[maybe[np.isin(fp[maybe], twice)]] = True
    return mask


def _hash_fixed(data: np.ndarray, n: int, width: int) -> np.ndarray:
    """Same values as the general path, for strings that all have `width` bytes."""
    with np.errstate(over="ignore"):
        h = np.full(n, (SEED ^ np.uint64(width)) * PRIME, np.uint64)
    if width == 0:
        return h
    words = -(-width // 8)
    padded = np.zeros((n, words * 8), np.uint8)
    padded[:, :width] = data.reshape(n, width)
    columns = padded.view(np.uint64)  # (n, words), little-endian like the general path
    with np.errstate(over="ignore"):
        for w in range(words):
            mixed = (h ^ columns[:, w]) * PRIME
            h = mixed ^ (mixed >> np.uint64(29))
    return h
