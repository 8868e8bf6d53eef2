"""The lake on disk: clean Parquet partitioned by event date, quarantine Parquet, and the manifest
that makes them a snapshot.

`manifest.json` is the commit point. Every run writes new, uniquely named part files, then
atomically replaces the manifest, which lists the input files already ingested (with content
hashes) and the part files that make up the snapshot. Readers read only listed parts, so a run
that dies half-way leaves no visible rows, and its orphan parts are removed by the next run.
Appends add parts; a changed contract rebuilds the snapshot from all inputs. One ingest writes to
a lake at a time (runs are not coordinated with each other).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from mlinfra_ray.contract import LINE, SOURCE
from mlinfra_ray.settings import ContractSettings

MANIFEST, CLEAN, QUARANTINE = "manifest.json", "clean", "quarantine.parquet"
FORMAT = 3  # 3: files carry a BLAKE3 content hash (2 had SHA-256); an older lake is rebuilt
PARTITION = "event_date"


def contract_hash(contract: ContractSettings) -> str:
    return hashlib.sha256(json.dumps(asdict(contract), sort_keys=True).encode()).hexdigest()[:16]


def snapshot_id(contract: ContractSettings, digests: list[str]) -> str:
    """Content hash of all ingested inputs and the contract: same bytes + same rules → same id."""
    h = hashlib.sha256(contract_hash(contract).encode())
    for digest in sorted(digests):
        h.update(digest.encode())
    return h.hexdigest()[:16]


def load_manifest(lake: str | Path) -> dict[str, Any] | None:
    path = Path(lake) / MANIFEST
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if data.get("format") == FORMAT else None  # older layouts are rebuilt


def save_manifest(lake: Path, manifest: dict[str, Any]) -> None:
    """Atomic replace: readers see the old snapshot or the new one, never half of one."""
    tmp = lake / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    os.replace(tmp, lake / MANIFEST)


def remove_unlisted(lake: Path, manifest: dict[str, Any] | None) -> int:
    """Delete part files no manifest lists (left by a crashed run, or replaced by a rebuild)."""
    listed = {f["path"] for f in (manifest or {}).get("clean_files", []) + (manifest or {}).get(
        "quarantine_files", [])}
    removed = 0
    if (lake / QUARANTINE).is_file():  # the single-file layout of format 1: rebuilt as a folder
        (lake / QUARANTINE).unlink()
        removed += 1
    for folder in (lake / CLEAN, lake / QUARANTINE):
        for f in folder.rglob("*.parquet") if folder.is_dir() else []:
            if str(f.relative_to(lake)) not in listed:
                f.unlink()
                removed += 1
    return removed


def write_clean(clean: pa.Table, lake: Path, contract: ContractSettings, run_id: str) -> list[dict]:
    """Hive partitions by the UTC date of the event time; one new part per date and run. `clean` comes
    sorted by event time (`Routed.clean_sorted_by`): the writer then sees each date as one run (20x
    faster than scattered dates) and readers get time-ordered row groups."""
    if clean.num_rows == 0:
        return []
    date = pc.cast(clean.column(contract.event_time), pa.date32())
    written: list[dict] = []
    pads.write_dataset(
        clean.append_column(PARTITION, date), lake / CLEAN, format="parquet",
        partitioning=pads.partitioning(pa.schema([(PARTITION, pa.date32())]), flavor="hive"),
        basename_template=f"part-{run_id}-{{i}}.parquet", existing_data_behavior="overwrite_or_ignore",
        file_visitor=lambda f: written.append({"path": str(Path(f.path).relative_to(lake)),
                                               "rows": f.metadata.num_rows}))
    return sorted(written, key=lambda f: f["path"])


def write_quarantine(quarantine: pa.Table, folder: Path, run_id: str, lake: Path) -> list[dict]:
    if quarantine.num_rows == 0:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"part-{run_id}.parquet"
    pq.write_table(quarantine, path)
    return [{"path": str(path.relative_to(lake)), "rows": quarantine.num_rows}]


def clean_keys(lake: Path, manifest: dict[str, Any] | None, key: str) -> pa.Array | None:
    """Dedup keys already in the snapshot, so a re-sent row in a new file is a duplicate."""
    files = [str(lake / f["path"]) for f in (manifest or {}).get("clean_files", [])]
    if not files:
        return None
    return pads.dataset(files, format="parquet").to_table(columns=[key]).column(key).combine_chunks()


def read_clean(lake: str, contract: ContractSettings) -> pa.Table:
    """The clean snapshot in event-time order, without lake bookkeeping columns."""
    root = Path(lake)
    manifest = load_manifest(root)
    if manifest is None:
        raise FileNotFoundError(f"{root / MANIFEST} not found: run the ingest stage first (jobs/ingest.py)")
    files = [str(root / f["path"]) for f in manifest["clean_files"]]
    if not files:
        return arrow_empty(contract)
    schemas = [pq.read_schema(f) for f in files] if manifest.get("extra_columns_kept") else []
    schema = pa.unify_schemas(schemas) if schemas else None
    table = pads.dataset(files, format="parquet", schema=schema).to_table()
    drop = [c for c in (PARTITION, SOURCE, LINE) if c in table.column_names]
    return table.drop_columns(drop).sort_by(contract.event_time)


def arrow_empty(contract: ContractSettings) -> pa.Table:
    from mlinfra_ray.contract import arrow_schema

    return arrow_schema(contract).empty_table()
