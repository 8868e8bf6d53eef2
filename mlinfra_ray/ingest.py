"""Ingest stage: raw files → contract → clean Parquet + quarantine + manifest + quality report.

    list inputs (skip files the manifest already holds) → plan byte-range splits
    → Ray Data: one task per split reads, counts, hashes and applies the contract (Arrow kernels)
    → driver: global line numbers, route (clean / quarantine / duplicate), accounting check
    → report + metrics → error budget → write parts → commit the manifest

The routed rows of one run are gathered in the driver (deduplication needs them all, and the
clean table is written from there); that bounds a run by driver memory, about 2x the clean data.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from mlinfra_ray import lake as lk
from mlinfra_ray.contract import SPLIT, apply_contract, validate_contract
from mlinfra_ray.ingest_read import drop_files, read_split_lines
from mlinfra_ray.ingest_report import write_metrics
from mlinfra_ray.quality import write_quality_report
from mlinfra_ray.routing import Routed, route
from mlinfra_ray.settings import ContractSettings
from mlinfra_ray.sources import list_raw_files, redact

log = logging.getLogger(__name__)
COUNTS = ("rows_in", "clean", "quarantined", "duplicates_removed")
__all__ = ["DataQualityError", "IngestResult", "apply_contract", "ingest", "read_clean", "route_and_write"]
read_clean = lk.read_clean


class DataQualityError(RuntimeError):
    """Too many rows failed the contract: the error budget stops the pipeline here."""


@dataclass
class IngestResult:
    """This run's numbers (the manifest keeps the cumulative ones)."""

    rows_in: int
    clean: int
    quarantined: int
    duplicates_removed: int
    reasons: dict[str, int]
    snapshot_id: str
    clean_path: str
    quarantine_path: str
    report_path: str
    files: list[dict] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    extra_columns: dict[str, int] = field(default_factory=dict)
    run_id: str = ""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase of this run
    totals: dict[str, int] = field(default_factory=dict)  # the snapshot's cumulative counts

    @property
    def quarantine_fraction(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0


def ingest(raw: str | list[str], lake: str, contract: ContractSettings, use_ray: bool = True) -> IngestResult:
    """Run the ingest stage; raises DataQualityError over the contract's error budget.
    `use_ray=False` reads in this process, same code per split (small inputs: tests, notebooks)."""
    validate_contract(contract)
    started, run_id = time.monotonic(), time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    root = Path(lake)
    manifest = _open_lake(root, contract)
    files = list_raw_files(raw)
    if not files:
        raise FileNotFoundError(f"no CSV/JSON Lines/Parquet files under {redact(raw)}")
    known = {f["fingerprint"] for f in (manifest or {}).get("files", [])}
    todo = [f for f in files if f.fingerprint not in known]
    log.info("ingest: %d files from %s (%d new)", len(files), redact(raw), len(todo))
    clock = _Clock(started)
    table, entries, first_line = read_split_lines(todo, contract, use_ray)
    clock.lap("read_validate")
    digests = {f["blake3"] for f in (manifest or {}).get("files", [])}
    same = [i for i, e in enumerate(entries) if e["blake3"] in digests]  # touched or copied, not new
    table = drop_files(table, entries, same)
    entries = [e for i, e in enumerate(entries) if i not in same]
    seen = lk.clean_keys(root, manifest, contract.dedup_key) if contract.dedup_key else None
    routed = route(table, contract, seen, first_line)
    _count_per_file(routed, table, entries)
    clock.lap("route")
    skipped = [f.display for f in files if f.fingerprint in known] + [todo[i].display for i in same]
    return _finish(routed, entries, skipped, root, contract, manifest, run_id, clock)


def route_and_write(table: pa.Table, files: list[dict] | list[str], lake: Path | str,
                    contract: ContractSettings) -> IngestResult:
    """Route an already validated table and write the outputs (the Ray-free half of `ingest`)."""
    root = Path(lake)
    manifest = _open_lake(root, contract)
    entries = [f if isinstance(f, dict) else {"path": f, "bytes": 0, "blake3": f, "fingerprint": f}
               for f in files]
    seen = lk.clean_keys(root, manifest, contract.dedup_key) if contract.dedup_key else None
    routed = route(table, contract, seen)
    if entries and all("split_ids" in e for e in entries):
        _count_per_file(routed, table, entries)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    return _finish(routed, entries, [], root, contract, manifest, run_id, _Clock(time.monotonic()))


def _open_lake(root: Path, contract: ContractSettings) -> dict | None:
    """The committed manifest to append to, or None when the snapshot is (re)built from scratch."""
    root.mkdir(parents=True, exist_ok=True)
    lk.remove_unlisted(root, lk.load_manifest(root))  # leftovers of a run that died
    manifest = lk.load_manifest(root)
    if manifest is not None and manifest["contract"]["hash"] != lk.contract_hash(contract):
        log.info("ingest: the contract changed; rebuilding the snapshot from all inputs")
        return None
    return manifest


def _count_per_file(routed: Routed, table: pa.Table, entries: list[dict]) -> None:
    if not entries:
        return
    index = {e["split_ids"][i]: n for n, e in enumerate(entries) for i in range(len(e["split_ids"]))}
    splits = table.column(SPLIT).to_numpy() if table.num_rows else np.zeros(0, np.int32)
    lookup = np.full(max(index) + 1, 0, np.int64)
    lookup[list(index)] = list(index.values())
    counts = np.bincount(lookup[splits] * 3 + routed.outcome, minlength=3 * len(entries)).reshape(-1, 3)
    for e, (clean, quarantined, dup) in zip(entries, counts.tolist(), strict=True):
        e.update(rows_in=clean + quarantined + dup, clean=clean, quarantined=quarantined,
                 duplicates_removed=dup)


class _Clock:
    """Seconds per phase, for the manifest's run record and the bench's breakdown."""

    def __init__(self, started: float):
        self.started = self.last = started
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self.last, 3)
        self.last = now


def _finish(routed: Routed, entries: list[dict], skipped: list[str], root: Path, contract: ContractSettings,
            manifest: dict | None, run_id: str, clock: _Clock) -> IngestResult:
    all_files = [*(manifest or {}).get("files", []), *[{**e, "run_id": run_id} for e in entries]]
    for e in all_files:
        e.pop("split_ids", None)
    result = IngestResult(
        rows_in=len(routed.outcome), clean=routed.n_clean, quarantined=routed.quarantine.num_rows,
        duplicates_removed=routed.duplicates, reasons=dict(routed.reasons.most_common()),
        snapshot_id=lk.snapshot_id(contract, [f["blake3"] for f in all_files]),
        clean_path=str(root / lk.CLEAN), quarantine_path=str(root / lk.QUARANTINE),
        report_path=str(root / "quality.html"), files=entries, skipped_files=skipped,
        extra_columns=routed.extras, run_id=run_id, timings=clock.laps,
        totals={k: (manifest or {}).get(k, 0) for k in COUNTS})
    log.info("ingest: rows in %d = clean %d + quarantined %d + duplicates %d (%d files skipped)",
             result.rows_in, result.clean, result.quarantined, result.duplicates_removed, len(skipped))
    if result.quarantine_fraction > contract.max_quarantine_fraction:
        _reject(routed, result, root, contract, manifest)
    new, clean = _commit(result, routed, all_files, root, contract, manifest, run_id)
    clock.lap("write")
    if result.rows_in or manifest is None:
        write_quality_report(clean, routed.quarantine, result, root, contract)
        clock.lap("report")
    result.seconds = round(time.monotonic() - clock.started, 3)
    result.totals = {k: new[k] for k in result.totals}
    new["runs"][-1].update(seconds=result.seconds, timings=result.timings)
    lk.save_manifest(root, new)
    lk.remove_unlisted(root, new)
    write_metrics(root, new, result, over_budget=False)
    return result


def _reject(routed: Routed, result: IngestResult, root: Path, contract: ContractSettings,
            manifest: dict | None) -> None:
    """Over the error budget: report and keep the rejected rows for people, commit nothing."""
    write_quality_report(routed.clean, routed.quarantine, result, root, contract, over_budget=True)
    rejected = lk.write_quarantine(routed.quarantine, root / "rejected", result.run_id, root)
    write_metrics(root, manifest, result, over_budget=True)
    top = ", ".join(f"{k} ({v})" for k, v in routed.reasons.most_common(5))
    raise DataQualityError(
        f"{result.quarantine_fraction:.1%} of rows quarantined, over the error budget "
        f"max_quarantine_fraction={contract.max_quarantine_fraction:.1%}; top reasons: {top}; "
        f"nothing was written to the snapshot; see {result.report_path} and {root / rejected[0]['path']}")


def _commit(result: IngestResult, routed: Routed, all_files: list[dict], root: Path,
            contract: ContractSettings, old: dict | None, run_id: str) -> tuple[dict, pa.Table]:
    """Write this run's parts; return the manifest that will make them visible, and the clean rows."""
    clean = routed.clean_sorted_by(contract.event_time)
    clean_files = [*(old or {}).get("clean_files", []), *lk.write_clean(clean, root, contract, run_id)]
    quarantine_files = [*(old or {}).get("quarantine_files", []),
                        *lk.write_quarantine(routed.quarantine, root / lk.QUARANTINE, run_id, root)]
    totals = Counter((old or {}).get("reasons", {})) + Counter(result.reasons)
    extras = Counter((old or {}).get("extra_columns", {})) + Counter(result.extra_columns)
    run = {"run_id": run_id, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "files": len(result.files), "skipped_files": len(result.skipped_files),
           **{k: getattr(result, k) for k in COUNTS}}
    return {
        "format": lk.FORMAT, "snapshot_id": result.snapshot_id,
        "contract": {"name": contract.name, "hash": lk.contract_hash(contract)},
        **{k: (old or {}).get(k, 0) + getattr(result, k) for k in COUNTS},
        "reasons": dict(totals.most_common()), "extra_columns": dict(extras),
        "extra_columns_kept": contract.extra_columns == "keep" and bool(extras),
        "files": all_files, "clean_files": clean_files, "quarantine_files": quarantine_files,
        "runs": [*(old or {}).get("runs", []), run], "report": "quality.html",
    }, clean

