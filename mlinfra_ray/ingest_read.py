"""The Ray Data half of ingestion: one task per byte-range split reads the bytes once, parses
them, hashes them and applies the contract; the driver then orders the blocks, turns split-local
line numbers into file line numbers and assembles per-file content hashes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.cluster import cluster_cpus
from mlinfra_ray.contract import LINE, SPLIT, SPLIT_INFO, apply_contract, only_rejected_lines
from mlinfra_ray.fingerprint import fingerprint
from mlinfra_ray.readers import Layout, layout, read_split, split_stats
from mlinfra_ray.routing import KEY_FP, file_lines
from mlinfra_ray.settings import ContractSettings
from mlinfra_ray.sources import RawFile, RawInputError, file_digest, plan_splits

log = logging.getLogger(__name__)
# Ray Data buffers what a task yields until it exceeds this many bytes, then stores it as one
# block (sliced only past 1.5x this): a validated 12 MiB CSV split of the fraud data is ~20 MB,
# so a task ships ~6 splits per block and its remainder when it ends. Every block costs the
# driver (~2.4 ms: fetch, deserialize, Ray Data's bookkeeping) and the raylet (~1.7 ms) CPU that
# the read tasks then lack: with one block per split (17 for the bench's file) they took 0.152
# and 0.038 CPU-s per run, with 128 MiB blocks (4) 0.120 and 0.016, and the run 0.714 -> 0.660 s
# median (10 runs each, alternated with pyarrow's read in one process, Arrow's pool released
# between runs; one block per task: 0.658 s). The bound keeps a task's held tables and the
# largest object small whatever the input's size. Any size is correct (`in_split_order`).
BLOCK_BYTES = 128 * 1024 * 1024


def read_validated(files: list[RawFile], contract: ContractSettings,
                   use_ray: bool = True) -> tuple[pa.Table, list[dict]]:
    """(validated rows in input order with file line numbers, one manifest entry per file).

    `use_ray=False` runs the very same per-split function in this process (tests, small tools)."""
    table, entries, first_line = read_split_lines(files, contract, use_ray)
    return with_file_lines(table, first_line), entries


def read_split_lines(files: list[RawFile], contract: ContractSettings,
                     use_ray: bool = True) -> tuple[pa.Table, list[dict], np.ndarray]:
    """`read_validated` with `_line` left as each row's 0-based line index within its split, plus
    the file line number of every split's first line (indexed by split id): `route` turns them
    into file line numbers only for the rows that leave the ingest. Numbering all 2.7M rows of the
    bench's file wrote a fresh 21 MB column after the last block had arrived (~30 ms of page
    faults when pyarrow had just freed its own memory in the same process)."""
    splits = plan_splits(files)
    if not splits:
        tables = []
    elif use_ray:
        tables = _run(splits, contract)
    else:
        tables = [validate_split(s, layout(contract), contract) for s in splits]
    tables = in_split_order(tables)
    stats = _split_facts(tables, splits)
    # "default" promotion: `_extra` of Arrow's null type (splits without unknown columns) joins
    # EXTRA_TYPE where other splits had some; if none had, it stays null-typed (routing allows it)
    table = pa.concat_tables(tables, promote_options="default") if tables else _empty(contract)
    entries = []
    for i, f in enumerate(files):
        parts = [s for s in splits if s["file_index"] == i]
        entries.append({"path": f.display, "bytes": f.size, "fingerprint": f.fingerprint,
                        "blake3": file_digest([stats[s["split"]]["blake3"] for s in parts]),
                        "split_ids": [s["split"] for s in parts]})
    return table, entries, _first_lines(splits, stats)


def _run(splits: list[dict], contract: ContractSettings) -> list[pa.Table]:
    import ray

    ctx = ray.data.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in ("raise_original_map_exception", "op_resource_reservation_enabled",
                                          "target_max_block_size", "_max_num_blocks_in_streaming_gen_buffer")}
    ctx.raise_original_map_exception = True
    # One map operator behind the input buffer: nothing downstream to reserve CPUs for. With the
    # reservation on, Ray Data holds back half the cluster's CPUs per operator, and on 2 CPUs the
    # splits ran one at a time (measured: 3.3 s → 2.1 s for 200 MB with it off).
    ctx.op_resource_reservation_enabled = False
    ctx.target_max_block_size = BLOCK_BYTES
    groups = task_groups(splits, cluster_cpus())
    # No generator backpressure (Ray Data's default pauses a task once it is 2 blocks ahead of the
    # executor's bookkeeping): every block is held until routing anyway, so pausing bounds no
    # memory, and the driver, busy mapping blocks, is slow to acknowledge them (in one process,
    # alternated: 1.19 → 1.15 s and 1.33 → 1.28 s median for 200 MB on 2 CPUs). Without this
    # setting Ray Data passes no `_generator_backpressure_num_objects` to its tasks, and Ray's
    # default is none (passing -1 to map_batches ourselves is deprecated since Ray 2.60).
    ctx._max_num_blocks_in_streaming_gen_buffer = None
    ds = ray.data.from_items([{"splits": json.dumps(g)} for g in groups], override_num_blocks=len(groups))
    ds = ds.map_batches(read_and_validate, batch_size=1, batch_format="pyarrow",
                        fn_kwargs={"lay": layout(contract), "contract": contract})
    try:
        # Each block fetched as it is produced (`to_arrow_refs` returns only once all are): the
        # driver maps them while the tasks still run, and the last one is ready ~0.1 s sooner.
        return [table for bundle in ds.iter_internal_ref_bundles() for table in ray.get(bundle.block_refs)]
    except Exception as err:  # a task failed: surface an unreadable file as itself, not a Ray trace
        cause = _find(err, RawInputError)
        if cause is not None:
            raise RawInputError(str(getattr(cause, "cause", None) or cause)) from None
        raise
    finally:
        for key, value in saved.items():
            setattr(ctx, key, value)


def in_split_order(tables: list[pa.Table]) -> list[pa.Table]:
    """Zero-copy slices of `tables`, one per run of a split's rows, ordered by split (stably, so
    the pieces of one split keep their order). A task validates several splits that need not be
    neighbours and ships several per block, and Ray Data may merge or cut what a task yields, so
    a returned table is not one split. A task yields its splits in increasing order, so within a
    chunk the ids never decrease and a chunk's ends say whether it holds one split (the usual
    case: the ids of a block's rows are never read one by one)."""
    pieces = []
    for t in tables:
        at = 0
        for chunk in t.column(SPLIT).chunks:
            n = len(chunk)
            if not n:
                continue
            first = chunk[0].as_py()
            if first == chunk[-1].as_py():
                runs = [(first, 0, n)]
            else:
                ids = chunk.to_numpy()
                cuts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist(), n]
                runs = [(int(ids[a]), a, b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
            pieces += [(split, t.slice(at + a, length)) for split, a, length in runs]
            at += n
    return [t for _, t in sorted(pieces, key=lambda p: p[0])]


def task_groups(splits: list[dict], cpus: int, waves: int = 1) -> list[list[dict]]:
    """Splits per Ray task, validated one after another (each yielded as its own table; Ray Data
    ships them in blocks of up to BLOCK_BYTES): `waves` tasks per CPU, balanced by bytes (largest
    split first onto the lightest task).

    Ray Data notices a finished task only at its next scheduling poll (up to 0.1 s, measured as
    ~0.1-s idle gaps on every worker at each task boundary), so every extra wave costs that much.
    Splits cost about their bytes, so one wave balanced by bytes leaves little imbalance (each
    file's short last split evens it out). Measured, 200 MB in 13 splits on 2 CPUs: tasks took
    1.68-1.76 s as five tasks of 3,3,3,3,1 splits, 1.36-1.52 s as two balanced tasks."""
    n = max(1, min(len(splits), max(cpus, 1) * waves))
    loads, groups = [0] * n, [[] for _ in range(n)]
    for spec in sorted(splits, key=lambda s: (-(s["end"] - s["start"]), s["split"])):
        i = loads.index(min(loads))
        loads[i] += max(spec["end"] - spec["start"], 1)
        groups[i].append(spec)
    return [sorted(g, key=lambda s: s["split"]) for g in groups if g]


def read_and_validate(batch: pa.Table, lay: Layout, contract: ContractSettings) -> Iterator[pa.Table]:
    """The Ray Data task over one group of splits: one validated table per split, then one of all
    the lines the parser rejected. Kept with their split, those few hundred rows were a second
    chunk of every column of every split, and Ray pickles Arrow tables array by array in Python
    (~50 µs each): a 7-split block took 10.8 ms to serialize with them, 6.9 ms without."""
    rejected = []
    for group in batch.column("splits").to_pylist():
        for spec in json.loads(group):
            parts = _validated_parts(spec, lay, contract)
            parsed = [table for table, only_rejected in parts if not only_rejected]
            rejected += [table for table, only_rejected in parts if only_rejected]
            if parsed:
                yield pa.concat_tables(parsed)
    if rejected:  # one chunk (the splits' dictionaries unified); `in_split_order` puts rows back
        yield pa.concat_tables(rejected, promote_options="default").combine_chunks()


def validate_split(spec: dict, lay: Layout, contract: ContractSettings) -> pa.Table:
    """One split: bytes → raw columns → typed columns + reasons (+ the dedup key's fingerprint,
    so the driver deduplicates integers), all in Arrow."""
    out = [table for table, _ in _validated_parts(spec, lay, contract)]
    return pa.concat_tables(out) if out else _empty(contract)


def _validated_parts(spec: dict, lay: Layout, contract: ContractSettings) -> list[tuple[pa.Table, bool]]:
    """(validated table, holds only lines the parser rejected?) per batch the reader made:
    parsed rows, then rejected lines (their own batch: no copy)."""
    out = []
    for chunk in read_split(spec, lay).to_batches():
        table = apply_contract(pa.Table.from_batches([chunk]), contract)
        if contract.dedup_key is not None:
            table = table.append_column(KEY_FP, pa.array(fingerprint(table.column(contract.dedup_key))))
        out.append((table, only_rejected_lines(chunk)))
    return out


def _find(err: BaseException, kind: type) -> BaseException | None:
    seen = 0
    while err is not None and seen < 20:
        if isinstance(getattr(err, "cause", None), kind):
            return err.cause
        if isinstance(err, kind):
            return err
        err = getattr(err, "cause", None) or err.__cause__
        seen += 1
    return None


def _split_facts(tables: list[pa.Table], splits: list[dict]) -> dict[int, dict]:
    """Per-split line count and digest, carried in-band; splits without rows are re-measured."""
    facts: dict[int, dict] = {}
    for t in tables:
        for chunk in t.column(SPLIT_INFO).chunks:
            for value in chunk.dictionary.to_pylist():
                info = json.loads(value)
                facts[info["split"]] = info
    for s in splits:
        if s["split"] not in facts:
            facts[s["split"]] = split_stats(s)
    return facts


def _first_lines(splits: list[dict], facts: dict[int, dict]) -> np.ndarray:
    """Per split id: the 1-based file line number of its first line."""
    first = np.ones(len(splits), np.int64)
    for s in splits:
        if s["part"] > 0:
            first[s["split"]] = first[s["split"] - 1] + facts[s["split"] - 1]["lines"]
    return first


def with_file_lines(table: pa.Table, first_line: np.ndarray) -> pa.Table:
    """Split-local 0-based line index (int32) → 1-based line number in the file (int64)."""
    return table.set_column(table.schema.get_field_index(LINE), LINE, file_lines(table, None, first_line))


def drop_files(table: pa.Table, entries: list[dict], indices: list[int]) -> pa.Table:
    """Remove the rows of the given files (content that was already ingested under another name)."""
    if not indices or table.num_rows == 0:
        return table
    drop = [sid for i in indices for sid in entries[i]["split_ids"]]
    return table.filter(pc.invert(pc.is_in(table.column(SPLIT), value_set=pa.array(drop, pa.int32()))))


def _empty(contract: ContractSettings) -> pa.Table:
    """What a run with no new input validates to (same columns as a real run)."""
    from mlinfra_ray.contract import EXTRA, EXTRA_TYPE, SOURCE

    def dictionary(index: pa.DataType) -> pa.Array:
        return pa.array([], pa.dictionary(index, pa.string()))

    raw = pa.table({**{c.name: pa.array([], pa.string()) for c in contract.columns},
                    SOURCE: dictionary(pa.int32()), LINE: pa.array([], pa.int32()),
                    SPLIT: pa.array([], pa.int32()), SPLIT_INFO: dictionary(pa.int8()),
                    EXTRA: pa.array([], EXTRA_TYPE)})
    table = apply_contract(raw, contract)
    if contract.dedup_key is not None:
        table = table.append_column(KEY_FP, pa.array([], pa.uint64()))
    return table
