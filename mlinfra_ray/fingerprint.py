"""64-bit fingerprints of key columns, computed over Arrow's buffers (no Python per value), so
that deduplication can run on integers: sort, find repeated fingerprints, then compare the few
candidate keys exactly. A collision can only add a candidate, never drop or merge a row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

PRIME = np.uint64(0x100000001B3)
SEED = np.uint64(0xCBF29CE484222325)
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
    """FNV-style mixing of each string's bytes, read as 8-byte little-endian words (compiled:
    2.3 ms per 220k ids, against 6.3 for the numpy version it replaced)."""
    from mlinfra_ray.text_kernels import fnv64

    return fnv64(arr, SEED, PRIME)


def repeated(fp: np.ndarray) -> np.ndarray:
    """Mask of positions whose fingerprint occurs more than once (sort-based: fast on integers).
    numpy, not a compiled kernel: the driver is the only caller, and importing numba there costs a
    one-shot ingest job ~0.4 s (import + loading the cached kernel), more than the ~35 ms a
    compiled version saves per 2.7M keys."""
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
