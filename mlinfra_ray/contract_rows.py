"""What a failing row carries: its reason codes and its original values. Built only for the
failing rows (typically a few percent), with numpy and string kernels, never row by row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.bitmaps import bools, masked


def reasons_for(rows: np.ndarray, checks: list, parse: pa.Array | None) -> pa.Array:
    """";"-joined codes per failing row; a parser rejection is the only reason for its row.

    Rows share few distinct combinations of failed checks, so each combination's string is built
    once and taken per row."""
    idx = pa.array(rows, pa.int64())
    fired = [(mask, code) for mask, code in checks if mask.true_count]
    hits = np.zeros((len(rows), len(fired)), bool)
    for j, (mask, _) in enumerate(fired):
        hits[:, j] = bools(mask)[rows]
    packed = np.packbits(hits, axis=1)  # one row of bytes per failing row: its combination
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel() if len(fired) else np.zeros(len(rows))
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    labels = [";".join(fired[j][1] for j in np.flatnonzero(hits[i])) for i in first]
    reasons = pa.array(labels, pa.string()).take(pa.array(np.asarray(inverse).ravel(), pa.int64()))
    if parse is not None and parse.null_count < len(parse):
        rejected = parse.take(idx)
        reasons = pc.if_else(pc.is_valid(rejected), rejected, reasons)
    return reasons


def raw_for(rows: np.ndarray, columns: dict[str, pa.Array], raw_text: pa.Array | None) -> pa.Array:
    """The failing rows' original values as one JSON object each, or the rejected line itself.

    All values are taken column after column into one array, then one compiled pass writes the
    objects (escaping only where a value needs it)."""
    from mlinfra_ray.text_kernels import json_objects

    idx, k = pa.array(rows, pa.int64()), len(rows)
    texts = [_as_text(column.take(idx)) for column in columns.values()]
    if not texts:
        return pa.array(["{}"] * k, pa.string())
    raw = json_objects(list(columns), pa.concat_arrays(texts))
    if raw_text is not None and raw_text.null_count < len(raw_text):
        line = raw_text.take(idx)
        raw = pc.if_else(pc.is_valid(line), line, raw)
    return raw


def _as_text(value: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(value.type):
        return pc.strftime(value, format="%Y-%m-%dT%H:%M:%S")
    return value.cast(pa.string())


def scatter(rows: np.ndarray, values: pa.Array, n: int) -> pa.DictionaryArray:
    """A length-n column: `values` at `rows`, null elsewhere. Dictionary-encoded, so the clean
    majority of rows costs a null bit and an index, and no string is copied."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    index = np.full(n, -1, np.int32)
    index[rows] = np.arange(len(rows), dtype=np.int32)
    return pa.DictionaryArray.from_arrays(masked(index, pa.int32(), index >= 0), values.cast(pa.string()),
                                          safe=False)  # in range by construction
