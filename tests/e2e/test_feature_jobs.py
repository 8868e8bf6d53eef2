"""The feature-store jobs as users run them: `python jobs/features.py`, `jobs/materialize.py` and
`jobs/skew_check.py` in subprocesses with Hydra overrides (SQLite and a real Redis), a re-run
that moves no data, a skew check that fails on a tampered online store, and features +
materialize submitted with `ray job submit` to a token-auth head on loopback.

About 3 minutes on 2 cores (a head start and two submitted jobs are most of it).
"""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lakes import build_lake
from ray_procs import cli_submit, start_head, stop_cluster

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["debug=fast", "data.synthetic.rows=4000", "data.synthetic.n_users=150",
         "data.synthetic.n_merchants=30", "ray.num_cpus=2"]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run_job(script: str, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, f"jobs/{script}", *SMALL, *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


def report(stdout: str):
    """The job's JSON report: the last top-level JSON value it printed. Ray's log monitor may
    print a line of its own after it (seen once in CI: a worker's file-descriptor warning), so
    the value is decoded where it starts and what follows it is ignored."""
    start = max(stdout.rfind("\n{"), stdout.rfind("\n["))
    text = stdout[start:] if start >= 0 else stdout
    return json.JSONDecoder().raw_decode(text.lstrip())[0]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return build_lake(tmp_path_factory.mktemp("fs"), SMALL)


def test_features_materialize_skew_check_on_sqlite(lake):
    first = report(ok(run_job("features.py", f"paths.root={lake}")))
    assert first["state"]["version"] == 1 and all(w["rows"] > 0 for w in first["writes"])
    assert Path(first["state"]["path"]).is_file()
    mat = report(ok(run_job("materialize.py", f"paths.root={lake}")))
    assert [m["full"] for m in mat] == [True, True] and all(m["entities_written"] > 0 for m in mat)
    skew = report(ok(run_job("skew_check.py", f"paths.root={lake}")))
    assert skew["mismatches"] == 0 and skew["sampled"] > 0

    # a re-run with nothing new offline reads nothing (re-running features.py: tests/ray)
    inc = report(ok(run_job("materialize.py", f"paths.root={lake}")))
    assert [(m["full"], m["rows_read"]) for m in inc] == [(False, 0), (False, 0)]

    # someone writes into the online store behind the pipeline's back: the skew check fails the job
    db = sqlite3.connect(lake / "online_store.sqlite")
    entity, blob = db.execute("SELECT entity, v FROM view_user_amount LIMIT 1").fetchone()
    values = np.frombuffer(blob, np.float64).copy()
    values[1] += 1.0
    db.execute("UPDATE view_user_amount SET v = ? WHERE entity = ?", (values.tobytes(), entity))
    db.commit()
    db.close()
    bad = run_job("skew_check.py", f"paths.root={lake}", "features.skew_check.sample_entities=1000")
    assert bad.returncode != 0 and "skew check failed: 1 of" in bad.stderr
    assert '"value": 1' in bad.stdout


def test_materialize_and_skew_check_on_redis(lake, redis_url):
    if not (lake / "feature_store" / "views").exists():
        ok(run_job("features.py", f"paths.root={lake}"))
    redis = ["online_store=redis", f"online_store.url={redis_url}", "online_store.namespace=e2e"]
    mat = report(ok(run_job("materialize.py", f"paths.root={lake}", *redis)))
    assert [m["full"] for m in mat] == [True, True]
    skew = report(ok(run_job("skew_check.py", f"paths.root={lake}", *redis)))
    assert skew["mismatches"] == 0 and skew["sampled"] > 0


@pytest.mark.extended  # own head; every jobs/*.py starting in a submitted job is in CI (test_job_submit)
def test_features_and_materialize_as_ray_jobs(lake, tmp_path):
    head = start_head(num_cpus=2)
    try:
        root = tmp_path / "submitted"
        root.mkdir()
        subprocess.run(["cp", "-r", str(lake / "lake"), str(root / "lake")], check=True)
        overrides = " ".join(["ray=cluster", f"paths.root={root}",
                              *[o for o in SMALL if not o.startswith("ray.")]])
        # one job, both entry points (one upload, one job start): features then materialize
        entrypoint = f"python jobs/features.py {overrides} && python jobs/materialize.py {overrides}"
        code, out = cli_submit(head, ["bash", "-c", entrypoint], "0" * 40)
        assert code == 0 and "succeeded" in out, out[-6000:]
        assert '"entities_written"' in out  # materialize's report, printed by the job
        assert (root / "feature_store" / "states" / "v000001.json").is_file()
        db = sqlite3.connect(root / "online_store.sqlite")
        assert db.execute("SELECT COUNT(*) FROM view_user_amount").fetchone()[0] > 0
        db.close()
    finally:
        left = stop_cluster(head.temp_dir)
        assert not left, f"head processes still alive after stop: {sorted(left)}"
