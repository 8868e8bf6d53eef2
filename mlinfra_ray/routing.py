"""Route validated rows: clean, quarantined (with reasons and the columns at fault) or duplicate.

Pure Arrow/numpy, no Ray and no I/O, so the accounting can be unit- and property-tested:
every input row gets exactly one outcome, hence rows_in == clean + quarantined + duplicates.
Routing decides; it does not copy the clean rows. They are gathered once, by `Routed.clean_rows`,
in the order the writer wants (event time), instead of a filtered copy followed by a sorted one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.bitmaps import bools, valid
from mlinfra_ray.contract import EXTRA, EXTRA_TYPE, LINE, RAW, REASONS, SOURCE, SPLIT, SPLIT_INFO, arrow_schema
from mlinfra_ray.fingerprint import fingerprint, repeated
from mlinfra_ray.helpers import helper_pool
from mlinfra_ray.settings import ContractSettings

KEY_FP = "_key_fp"  # the dedup key's fingerprint, computed by the read tasks (in parallel)
DROP = {EXTRA, SPLIT, SPLIT_INFO, REASONS, RAW, KEY_FP, "_parse_error", "_raw_text"}  # not in clean data

CLEAN, QUARANTINED, DUPLICATE = 0, 1, 2
QUARANTINE_COLUMNS = [SOURCE, LINE, REASONS, "columns", RAW, EXTRA]


@dataclass
class Routed:
    table: pa.Table  # the validated rows, input order
    quarantine: pa.Table  # QUARANTINE_COLUMNS
    outcome: np.ndarray  # per input row: CLEAN | QUARANTINED | DUPLICATE
    reasons: Counter
    extras: dict[str, int]  # unknown column → rows that carried a value for it
    keep_extras: bool = False
    schema: pa.Schema | None = None  # clean columns' types (validated batches keep categoricals encoded)
    first_line: np.ndarray | None = None  # per split: its first file line, when `_line` is split-local
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # From a count and a sum, no 2.7 MB mask per outcome (bincount would first widen 2.7M int8
        # outcomes to int64: 12 ms; three masks and counts: ~3 ms; this: ~0.6 ms)
        if len(self.outcome) and not (0 <= self.outcome.min() and self.outcome.max() <= DUPLICATE):
            raise ValueError("outcome holds codes other than CLEAN, QUARANTINED, DUPLICATE")
        left = int(np.count_nonzero(self.outcome))  # quarantined + duplicates
        dup = int(self.outcome.sum(dtype=np.int64)) - left  # QUARANTINED counts 1, DUPLICATE 2
        self.counts = np.array([len(self.outcome) - left, left - dup, dup])

    @property
    def n_clean(self) -> int:
        return int(self.counts[CLEAN])

    @property
    def duplicates(self) -> int:
        return int(self.counts[DUPLICATE])

    @cached_property
    def clean(self) -> pa.Table:
        """Clean rows in input order: typed contract columns + _source_file, _line (+ extras)."""
        return self.clean_rows(np.flatnonzero(self.outcome == CLEAN))

    def clean_sorted_by(self, column: str) -> pa.Table:
        """Clean rows ordered by `column` (stable), gathered in one copy instead of filter + sort."""
        rows = np.flatnonzero(self.outcome == CLEAN)
        keys = pc.cast(self.table.column(column).take(pa.array(rows)), pa.int64())
        values = keys.to_numpy(zero_copy_only=False)
        order = stable_argsort(values) if keys.null_count == 0 else np.argsort(values, kind="stable")
        return self.clean_rows(rows[order])

    def clean_rows(self, rows: np.ndarray) -> pa.Table:
        """The given clean rows (indices into `table`), gathered in that order, one copy."""
        if not np.all(self.outcome[rows] == CLEAN):
            raise ValueError("clean_rows: some rows are not clean")
        return _gather(self.table, rows, sorted(self.extras) if self.keep_extras else [], self.schema,
                       self.first_line)

    def check(self) -> None:
        """The invariant, on the routed outputs rather than on counters."""
        rows_in, quarantined = len(self.outcome), self.quarantine.num_rows
        if quarantined != self.counts[QUARANTINED] or rows_in != self.n_clean + quarantined + self.duplicates:
            raise AssertionError(f"row accounting broken: {rows_in} in != {self.n_clean} clean + "
                                 f"{quarantined} quarantined + {self.duplicates} duplicates")


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """`np.argsort(keys, kind="stable")` for integer keys, faster: numpy's (vectorized) unstable
    sort, then only the runs of equal keys put back in input order (2.7M event times with ~8 %
    of rows in ties: 0.34 → ~0.15 s)."""
    order = np.argsort(keys)
    ordered = keys[order]
    tie = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(tie):
        pos = np.union1d(tie, tie + 1)  # every position inside a run of equal keys
        sub = order[pos]
        order[pos] = sub[np.lexsort((sub, ordered[pos]))]
    return order


def route(table: pa.Table, contract: ContractSettings, seen_keys: pa.Array | None = None,
          first_line: np.ndarray | None = None) -> Routed:
    """`table` rows must be in input order (file, then line) for "first row wins" deduplication.
    `first_line` (from `read_split_lines`): `_line` is split-local, and the rows that leave (the
    quarantine, gathered clean rows) get their file line numbers from it."""
    bad = valid(table.column(REASONS))
    outcome = bad.astype(np.int8)  # QUARANTINED == 1, CLEAN == 0 (np.where would widen to int64 first)
    # The quarantine (every bad row) does not depend on deduplication (among good rows only), so
    # both run at once: numpy's sort and Arrow's kernels release the GIL (140 → 110 ms, 2.7M rows).
    pending = helper_pool().submit(_quarantine_table, table, np.flatnonzero(bad), first_line)
    if contract.dedup_key is not None:
        fp = [c.to_numpy(zero_copy_only=False) for c in table.column(KEY_FP).chunks] \
            if KEY_FP in table.column_names else None
        outcome[_duplicates(table.column(contract.dedup_key), bad, seen_keys, fp)] = DUPLICATE
    quarantine = pending.result()
    reasons = Counter()
    for d in pc.value_counts(quarantine.column(REASONS)).to_pylist():  # few distinct combinations
        for code in d["values"].split(";") if d["values"] else ():
            reasons[code] += d["counts"]
    routed = Routed(table, quarantine, outcome, reasons, _extra_counts(table),
                    keep_extras=contract.extra_columns == "keep", schema=arrow_schema(contract),
                    first_line=first_line)
    routed.check()
    return routed


def file_lines(table: pa.Table, rows: pa.Array | None, first_line: np.ndarray | None) -> pa.Array:
    """File line numbers of `rows` (all rows when None): from split-local `_line` and each split's
    `first_line`, or `_line` itself when `first_line` is None (it holds file lines already)."""
    local = table.column(LINE) if rows is None else table.column(LINE).take(rows)
    if first_line is None:
        return local
    split = table.column(SPLIT) if rows is None else table.column(SPLIT).take(rows)
    if not len(local):
        return pa.array([], pa.int64())
    at = first_line[split.to_numpy()]
    at += local.to_numpy()
    return pa.array(at)


def _duplicates(column: pa.ChunkedArray, bad: np.ndarray, seen: pa.Array | None,
                fp: list[np.ndarray] | None = None) -> np.ndarray:
    """Rows of `column`, among those not `bad`, whose key appeared earlier in such a row or in
    `seen` (keys from earlier runs). Fingerprints find the candidates (a repeated fingerprint) with
    one integer sort; only candidates are compared as strings, first occurrence wins.

    Fingerprints of every row go into the sort (`fp`: the read tasks' per-chunk arrays), and the
    quarantined rows leave the candidates afterwards: a superset of the good rows' repeats, the
    same answer, without first compressing the good rows' fingerprints into a fresh array
    (21 MB and ~17 ms for 2.7M rows, after the last block had arrived)."""
    n_seen = len(seen) if seen is not None else 0
    current = fp if fp is not None else [fingerprint(column)]
    candidates = np.flatnonzero(repeated(([fingerprint(seen)] if n_seen else []) + current))
    old = candidates[candidates < n_seen]
    new = candidates[candidates >= n_seen] - n_seen
    new = new[~bad[new]]
    if not len(new):
        return new
    earlier = [seen.take(pa.array(old)).cast(pa.string())] if len(old) else []
    codes = pc.dictionary_encode(pa.concat_arrays(earlier + [_take_text(column, new)])).indices.to_numpy()
    _, first = np.unique(codes, return_index=True)
    later = np.ones(len(codes), bool)
    later[first] = False
    return new[later[len(old):]]


def _combined(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _gather(table: pa.Table, rows: np.ndarray, extras: list[str], schema: pa.Schema | None = None,
            first_line: np.ndarray | None = None) -> pa.Table:
    """Take `rows` of the clean columns, one column per thread (Arrow releases the GIL), plus the
    named unknown columns as strings; columns `schema` names get its types (decoded categoricals).
    On the helper pool (one thread per CPU): random-order takes are memory-bound, and 4 threads on
    2 CPUs took 0.71-1.13 s for 2.7M time-sorted rows against 0.45 s with 2."""
    names = [c for c in table.column_names if c not in DROP]
    index = pa.array(rows, pa.int64())
    types = {f.name: f.type for f in schema} if schema is not None else {}

    def take(name: str) -> pa.ChunkedArray:
        if name == LINE:
            return file_lines(table, index, first_line)
        values = table.column(name).take(index)
        return values.cast(types[name]) if name in types and values.type != types[name] else values

    columns = list(helper_pool().map(take, names))
    clean = pa.Table.from_arrays(columns, names=names)
    if extras:
        extra = table.column(EXTRA).take(index)
        for name in extras:
            label = name if name not in clean.column_names else f"extra_{name}"
            clean = clean.append_column(label, _lookup(extra, name))
    return clean


def _fault_columns(reasons: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`type:amount;enum:channel` → `amount,channel` (parser rejections have no column at fault).
    Rows share few distinct reason strings: each is rewritten once, then taken per row."""
    coded = pc.dictionary_encode(_combined(reasons))
    cols = pc.replace_substring_regex(coded.dictionary, r"(^|;)parse:[^;]*", "")
    cols = pc.replace_substring_regex(cols, r"(^|;)[a-z_]+:", r"\1")
    return pc.utf8_trim(pc.replace_substring(cols, ";", ","), characters=",").take(coded.indices)


def _quarantine_table(table: pa.Table, rows: np.ndarray, first_line: np.ndarray | None = None) -> pa.Table:
    """The quarantined `rows` of `table` (only the columns quarantine keeps are gathered), in file
    line order. A split's lines the parser rejected follow its parsed rows in `table`, so the
    order by row would depend on where the input was cut into splits (and so on the CPU count)."""
    index = pa.array(rows, pa.int64())
    reasons = _take_text(table.column(REASONS), rows)
    extra = table.column(EXTRA).take(index) if EXTRA in table.column_names else pa.nulls(len(rows), EXTRA_TYPE)
    if extra.type != EXTRA_TYPE:  # null-typed: no split of this run had unknown columns
        extra = extra.cast(EXTRA_TYPE)
    lines = file_lines(table, index, first_line)
    quarantine = pa.table({
        SOURCE: _take_text(table.column(SOURCE), rows), LINE: lines, REASONS: reasons,
        "columns": _fault_columns(reasons), RAW: _take_text(table.column(RAW), rows), EXTRA: extra})
    if SPLIT not in table.column_names or len(rows) < 2:
        return quarantine
    split = table.column(SPLIT).take(index).to_numpy()  # splits are in file order, lines within them
    line = lines.to_numpy()
    if np.any((split[1:] == split[:-1]) & (line[1:] < line[:-1])):
        quarantine = quarantine.take(pa.array(np.lexsort((line, split))))
    return quarantine


def _take_text(col: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """Sorted `rows` of a text column as plain strings, chunk by chunk: a take across chunks first
    concatenates them (26k dedup candidates of 2.7M keys: 6 ms, against ~1 ms chunk by chunk), and
    for dictionary-encoded text unifies their dictionaries, hashing every failing row's raw JSON
    (12 of the 24 ms the quarantine table took for 2.7M rows)."""
    bounds = np.cumsum([0] + [len(c) for c in col.chunks])
    los, his = np.searchsorted(rows, bounds[:-1]), np.searchsorted(rows, bounds[1:])
    parts = [chunk.take(pa.array(rows[lo:hi] - start)).cast(pa.string())
             for chunk, start, lo, hi in zip(col.chunks, bounds[:-1], los, his, strict=True) if hi > lo]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def _extra_counts(table: pa.Table) -> dict[str, int]:
    """Unknown column → rows (of any outcome) that carried a value for it."""
    extra = table.column(EXTRA) if EXTRA in table.column_names else None
    if extra is None or extra.null_count == len(extra):
        return {}
    keys = pc.struct_field(pc.list_flatten(extra), "k")
    return {d["values"]: d["counts"] for d in pc.value_counts(keys).to_pylist()}


def _lookup(extra: pa.ChunkedArray, name: str) -> pa.Array:
    """Per row, the value of extra column `name` (null where absent)."""
    extra = extra.combine_chunks()
    items = pc.list_flatten(extra)
    parents = pc.list_parent_indices(extra).to_numpy()
    hit = bools(pc.equal(pc.struct_field(items, "k"), name))
    index = np.full(len(extra), -1, np.int64)
    index[parents[hit]] = np.flatnonzero(hit)
    values = pc.struct_field(items, "v")
    return pa.concat_arrays([values, pa.nulls(1, pa.string())]).take(pa.array(np.where(index < 0, len(values),
                                                                                       index)))
