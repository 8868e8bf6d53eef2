"""Ingest stage: raw files → contract → clean Parquet + quarantine + manifest + quality report.

Ray Data reads each file in its own task and applies the contract to Arrow batches; the driver then
routes rows, removes duplicates by the contract's dedup key and writes the outputs. Accounting is
checked before anything is written: rows_in == clean + quarantined + duplicates_removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mlinfra_ray.contract import LINE, RAW, REASONS, SOURCE, apply_contract, validate_contract
from mlinfra_ray.quality import write_quality_report
from mlinfra_ray.readers import list_raw_files, read_bytes, read_raw_file
from mlinfra_ray.settings import ContractSettings

log = logging.getLogger(__name__)


class DataQualityError(RuntimeError):
    """Too many rows failed the contract: the error budget stops the pipeline here."""


@dataclass
class IngestResult:
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

    @property
    def quarantine_fraction(self) -> float:
        return self.quarantined / self.rows_in if self.rows_in else 0.0


def ingest(raw: str, lake: str, contract: ContractSettings) -> IngestResult:
    """Run the ingest stage; raises DataQualityError over the contract's error budget."""
    import ray

    validate_contract(contract)
    files = list_raw_files(raw)
    if not files:
        raise FileNotFoundError(f"no CSV/JSON Lines/Parquet files under {raw}")
    log.info("ingest: %d files from %s", len(files), raw)
    columns = [c.name for c in contract.columns]
    ds = ray.data.from_items([{"path": f} for f in files], override_num_blocks=len(files))
    ds = ds.map_batches(_read_batch, batch_size=1, batch_format="pyarrow", fn_kwargs={"columns": columns})
    ds = ds.map_batches(apply_contract, batch_format="pyarrow", fn_kwargs={"contract": contract})
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    return route_and_write(table, files, Path(lake), contract)


def _read_batch(batch: pa.Table, columns: list[str]) -> pa.Table:
    return pa.concat_tables([read_raw_file(p, columns) for p in batch.column("path").to_pylist()])


def route_and_write(table: pa.Table, files: list[str], lake: Path, contract: ContractSettings) -> IngestResult:
    """Split validated rows into clean / quarantine / duplicates and write all outputs."""
    bad = pc.not_equal(table.column(REASONS), "")
    quarantine = table.filter(bad).select([SOURCE, LINE, REASONS, RAW])
    quarantine = quarantine.append_column("columns", _fault_columns(quarantine.column(REASONS)))
    clean = table.filter(pc.invert(bad)).drop_columns([REASONS, RAW])
    clean, duplicates = _dedupe(clean, contract)
    reasons = Counter(r for rs in quarantine.column(REASONS).to_pylist() for r in rs.split(";"))
    rows_in = table.num_rows
    assert rows_in == clean.num_rows + quarantine.num_rows + duplicates, "row accounting broken"

    lake.mkdir(parents=True, exist_ok=True)
    inputs = [_file_entry(f) for f in files]
    result = IngestResult(
        rows_in=rows_in, clean=clean.num_rows, quarantined=quarantine.num_rows,
        duplicates_removed=duplicates, reasons=dict(reasons.most_common()),
        snapshot_id=_snapshot_id(inputs, contract), clean_path=str(lake / "clean"),
        quarantine_path=str(lake / "quarantine.parquet"), report_path=str(lake / "quality.md"),
        files=inputs)
    pq.write_table(quarantine, result.quarantine_path)
    write_quality_report(clean, quarantine, result, lake)
    log.info("ingest: rows in %d = clean %d + quarantined %d + duplicates %d",
             rows_in, result.clean, result.quarantined, duplicates)
    if result.quarantine_fraction > contract.max_quarantine_fraction:
        top = ", ".join(f"{k} ({v})" for k, v in reasons.most_common(5))
        raise DataQualityError(
            f"{result.quarantine_fraction:.1%} of rows quarantined, over the error budget "
            f"max_quarantine_fraction={contract.max_quarantine_fraction:.1%}; top reasons: {top}; "
            f"see {result.report_path}")
    _write_clean(clean, Path(result.clean_path), contract)
    (lake / "manifest.json").write_text(json.dumps(asdict(result), indent=2, default=str))
    return result


def _fault_columns(reasons: pa.ChunkedArray) -> pa.Array:
    cols = [",".join(sorted({r.split(":", 1)[1] for r in rs.split(";") if ":" in r and not
                             r.startswith("parse:")})) for rs in reasons.to_pylist()]
    return pa.array(cols, pa.string())


def _dedupe(clean: pa.Table, contract: ContractSettings) -> tuple[pa.Table, int]:
    """Keep the first row per dedup key (file order, then line order); count the rest."""
    if contract.dedup_key is None or clean.num_rows == 0:
        return clean, 0
    clean = clean.sort_by([(SOURCE, "ascending"), (LINE, "ascending")])
    keys = clean.column(contract.dedup_key).to_numpy(zero_copy_only=False)
    _, first = np.unique(keys, return_index=True)
    keep = np.sort(first)
    return clean.take(pa.array(keep)), clean.num_rows - len(keep)


def _write_clean(clean: pa.Table, path: Path, contract: ContractSettings) -> None:
    """Hive-partitioned by event date; the snapshot is rewritten whole, so re-runs never duplicate."""
    if path.exists():
        shutil.rmtree(path)
    clean = clean.sort_by(contract.event_time)
    date = pc.strftime(clean.column(contract.event_time), format="%Y-%m-%d")
    clean = clean.append_column("event_date", date)
    pads.write_dataset(clean, path, format="parquet", partitioning=["event_date"],
                       partitioning_flavor="hive", basename_template="part-{i}.parquet")


def _file_entry(uri: str) -> dict:
    data = read_bytes(uri)
    return {"path": uri, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _snapshot_id(inputs: list[dict], contract: ContractSettings) -> str:
    """Content hash of the inputs and the contract: same bytes + same rules → same snapshot."""
    h = hashlib.sha256(json.dumps(asdict(contract), sort_keys=True).encode())
    for entry in sorted(inputs, key=lambda e: e["sha256"]):
        h.update(entry["sha256"].encode())
    return h.hexdigest()[:16]


def read_clean(lake: str, contract: ContractSettings) -> pa.Table:
    """The clean snapshot in event-time order, without lake bookkeeping columns."""
    table = pads.dataset(Path(lake) / "clean", format="parquet", partitioning="hive").to_table()
    drop = [c for c in ("event_date", SOURCE, LINE) if c in table.column_names]
    return table.drop_columns(drop).sort_by(contract.event_time)
