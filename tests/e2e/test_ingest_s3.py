"""The ingest job as users run it, reading from S3: `python jobs/ingest.py paths.raw=s3://…` with
the standard AWS environment pointing at a real S3-compatible server on loopback (moto_server).
Re-runs and appends on S3 are covered in tests/ray/test_ingest_ray.py (one Ray start, not three)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mlinfra_ray.datasets.fraud import generate_transactions, write_raw
from mlinfra_ray.settings import SyntheticSettings
from tests.s3_server import moto_server

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    cfg = SyntheticSettings(rows=3000, files=3, json_fraction=0.34)
    write_raw(generate_transactions(cfg), raw, cfg)
    with moto_server() as server:
        server.upload("mlinfra-e2e", raw, "landing/fraud")
        yield server


def run_ingest(s3, root: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **s3.env()}
    return subprocess.run(
        [sys.executable, "jobs/ingest.py", "data=raw_files", "paths.raw=s3://mlinfra-e2e/landing/fraud",
         f"paths.root={root}", "ray.num_cpus=2", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.extended  # CI reads S3 through Ray Data in tests/ray/test_ingest_ray.py (same moto server)
def test_ingest_job_reads_s3(s3, tmp_path):
    first = run_ingest(s3, tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    manifest = json.loads((tmp_path / "lake" / "manifest.json").read_text())
    assert [f["path"].rsplit("/", 1)[1] for f in manifest["files"]] == \
        ["transactions_00.csv", "transactions_01.csv", "transactions_02.jsonl"]
    assert all(f["path"].startswith("s3://mlinfra-e2e/landing/fraud/") for f in manifest["files"])
    assert manifest["rows_in"] == manifest["clean"] + manifest["quarantined"] + manifest["duplicates_removed"]
    assert manifest["rows_in"] >= 3000 and manifest["quarantined"] > 0 and manifest["duplicates_removed"] > 0
    assert f"rows in {manifest['rows_in']} = clean {manifest['clean']}" in first.stdout
    quarantine = pq.read_table(tmp_path / "lake" / "quarantine.parquet")
    assert quarantine.num_rows == manifest["quarantined"]
    assert set(quarantine.column("_source_file").to_pylist()) <= {f["path"] for f in manifest["files"]}
    assert "mlinfra_ingest_rows_total" in (tmp_path / "lake" / "metrics.prom").read_text()



@pytest.mark.extended  # the budget check itself runs in CI through test_pipeline (local files)
def test_ingest_job_over_the_error_budget_exits_non_zero(s3, tmp_path):
    proc = run_ingest(s3, tmp_path, "contract.max_quarantine_fraction=0.001")
    assert proc.returncode != 0
    assert "over the error budget" in proc.stderr and "% of rows quarantined" in proc.stderr
    assert "top reasons: missing:amount" in proc.stderr
    assert not (tmp_path / "lake" / "manifest.json").exists()  # nothing downstream can consume it
    assert json.loads((tmp_path / "lake" / "quality.json").read_text())["over_budget"] is True
