"""Route validated rows: clean, quarantined (with reasons and the columns at fault) or duplicate.

Pure Arrow/numpy, no Ray and no I/O, so the accounting can be unit- and property-tested:
every input row gets exactly one outcome, hence rows_in == clean + quarantined + duplicates.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.contract import EXTRA, EXTRA_TYPE, LINE, RAW, REASONS, SOURCE, SPLIT, SPLIT_INFO
from mlinfra_ray.fingerprint import fingerprint, repeated
from mlinfra_ray.settings import ContractSettings

KEY_FP = "_key_fp"  # the dedup key's fingerprint, computed by the read tasks (in parallel)

CLEAN, QUARANTINED, DUPLICATE = 0, 1, 2
QUARANTINE_COLUMNS = [SOURCE, LINE, REASONS, "columns", RAW, EXTRA]


@dataclass
class Routed:
    clean: pa.Table  # typed contract columns + _source_file, _line (+ extra columns when kept)
    quarantine: pa.Table  # QUARANTINE_COLUMNS
    outcome: np.ndarray  # per input row: CLEAN | QUARANTINED | DUPLICATE
    reasons: Counter
    extras: dict[str, int]  # unknown column → rows that carried a value for it

    @property
    def duplicates(self) -> int:
        return int((self.outcome == DUPLICATE).sum())

    def check(self) -> None:
        """The invariant, on the outputs themselves rather than on counters."""
        rows_in = len(self.outcome)
        if rows_in != self.clean.num_rows + self.quarantine.num_rows + self.duplicates:
            raise AssertionError(f"row accounting broken: {rows_in} in != {self.clean.num_rows} clean + "
                                 f"{self.quarantine.num_rows} quarantined + {self.duplicates} duplicates")


def route(table: pa.Table, contract: ContractSettings, seen_keys: pa.Array | None = None) -> Routed:
    """`table` rows must be in input order (file, then line) for "first row wins" deduplication."""
    bad = pc.is_valid(table.column(REASONS)).to_numpy(zero_copy_only=False) if table.num_rows else \
        np.zeros(0, bool)
    outcome = np.where(bad, QUARANTINED, CLEAN).astype(np.int8)
    if contract.dedup_key is not None:
        good = np.flatnonzero(~bad)
        fp = table.column(KEY_FP).to_numpy()[good] if KEY_FP in table.column_names else None
        outcome[good[_duplicates(table.column(contract.dedup_key), good, seen_keys, fp)]] = DUPLICATE
    quarantine = _quarantine_table(table.filter(pa.array(outcome == QUARANTINED)))
    clean = _filter(table, outcome == CLEAN)
    clean, extras = _extras(clean, table, contract)
    codes = pc.list_flatten(pc.split_pattern(quarantine.column(REASONS), ";"))
    reasons = Counter({d["values"]: d["counts"] for d in pc.value_counts(codes).to_pylist()})
    routed = Routed(clean, quarantine, outcome, reasons, extras)
    routed.check()
    return routed


def _duplicates(column: pa.ChunkedArray, rows: np.ndarray, seen: pa.Array | None,
                fp: np.ndarray | None = None) -> np.ndarray:
    """Mask over `rows` of `column`: keys that appeared earlier (in these rows, or in `seen` from
    earlier runs). Fingerprints find the candidates (a repeated fingerprint) with one integer
    sort; only candidates are compared as strings, first occurrence wins."""
    n_seen = len(seen) if seen is not None else 0
    current = fp if fp is not None else fingerprint(column.take(pa.array(rows)))
    everything = np.concatenate([fingerprint(seen), current]) if n_seen else current
    candidates = np.flatnonzero(repeated(everything))
    dup = np.zeros(len(everything), bool)
    if len(candidates):
        old, new = candidates[candidates < n_seen], candidates[candidates >= n_seen] - n_seen
        parts = ([seen.take(pa.array(old)).cast(pa.string())] if n_seen else []) + \
            [_combined(column.take(pa.array(rows[new]))).cast(pa.string())]
        codes = pc.dictionary_encode(pa.concat_arrays(parts)).indices.to_numpy()
        _, first = np.unique(codes, return_index=True)
        later = np.ones(len(codes), bool)
        later[first] = False
        dup[candidates[later]] = True
    return dup[n_seen:]


def _combined(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _filter(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """Table.filter, one column per thread (Arrow releases the GIL): the clean copy is the
    biggest serial step of routing."""
    mask = pa.array(keep)
    with ThreadPoolExecutor(max_workers=4) as pool:
        columns = list(pool.map(lambda c: c.filter(mask), table.columns))
    return pa.Table.from_arrays(columns, schema=table.schema)


def _fault_columns(reasons: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`type:amount;enum:channel` → `amount,channel` (parser rejections have no column at fault)."""
    cols = pc.replace_substring_regex(reasons, r"(^|;)parse:[^;]*", "")
    cols = pc.replace_substring_regex(cols, r"(^|;)[a-z_]+:", r"\1")
    return _combined(pc.utf8_trim(pc.replace_substring(cols, ";", ","), characters=","))


def _quarantine_table(rows: pa.Table) -> pa.Table:
    n = rows.num_rows
    reasons = rows.column(REASONS).cast(pa.string())
    return pa.table({
        SOURCE: rows.column(SOURCE).cast(pa.string()), LINE: rows.column(LINE).cast(pa.int64()),
        REASONS: reasons, "columns": _fault_columns(reasons), RAW: rows.column(RAW).cast(pa.string()),
        EXTRA: rows.column(EXTRA) if EXTRA in rows.column_names else pa.nulls(n, EXTRA_TYPE)})


def _extras(clean: pa.Table, table: pa.Table, contract: ContractSettings) -> tuple[pa.Table, dict[str, int]]:
    """Count unknown columns over all rows; keep them as string columns if the contract says so."""
    extra = table.column(EXTRA) if EXTRA in table.column_names else None
    counts: dict[str, int] = {}
    if extra is not None and extra.null_count < len(extra):
        keys = pc.struct_field(pc.list_flatten(extra), "k")
        counts = {d["values"]: d["counts"] for d in pc.value_counts(keys).to_pylist()}
    drop = [c for c in (EXTRA, SPLIT, SPLIT_INFO, REASONS, RAW, KEY_FP, "_parse_error", "_raw_text")
            if c in clean.column_names]
    if contract.extra_columns == "keep" and counts:
        for name in sorted(counts):
            label = name if name not in clean.column_names else f"extra_{name}"
            clean = clean.append_column(label, _lookup(clean.column(EXTRA), name))
    return clean.drop_columns(drop), counts


def _lookup(extra: pa.ChunkedArray, name: str) -> pa.Array:
    """Per row, the value of extra column `name` (null where absent)."""
    extra = extra.combine_chunks()
    items = pc.list_flatten(extra)
    parents = pc.list_parent_indices(extra).to_numpy()
    hit = pc.equal(pc.struct_field(items, "k"), name).to_numpy(zero_copy_only=False)
    index = np.full(len(extra), -1, np.int64)
    index[parents[hit]] = np.flatnonzero(hit)
    values = pc.struct_field(items, "v")
    return pa.concat_arrays([values, pa.nulls(1, pa.string())]).take(pa.array(np.where(index < 0, len(values),
                                                                                       index)))
