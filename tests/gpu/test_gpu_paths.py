"""Training and serving with use_gpu=true, as users run them: the jobs as subprocesses on a local
Ray cluster that sees the machine's GPUs (experiment=gpu_1x: one DDP worker on one GPU, bf16
autocast), then the registered bundle served over HTTP and compared with offline scoring.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from tests.procs import free_port

ROOT = Path(__file__).resolve().parents[2]

COMMON = ["debug=fast", "ray.num_cpus=4"]


def job(script: str, root: Path, *overrides: str, timeout: int = 900) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, f"jobs/{script}", *COMMON, f"paths.root={root}", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    job("generate.py", root)
    job("ingest.py", root)
    out = job("train.py", root, "experiment=gpu_1x", "trainer.max_epochs=3", "trainer.batch_size=512")
    return root, out


def test_training_ran_on_the_gpu_and_learned(trained):
    from mlinfra_ray.bundle import load_bundle
    from mlinfra_ray.compose import compose_settings
    from mlinfra_ray.registry import resolve_alias

    root, out = trained
    # trainer.py logs the resources each worker was scheduled with; Ray gives a worker that holds
    # GPU: 1 its device through CUDA_VISIBLE_DEVICES, and ray.train.torch.get_device() -> cuda
    assert "workers x {'CPU': 1.0, 'GPU': 1.0}" in out, out[-3000:]
    settings = compose_settings([f"paths.root={root}"])
    path, _ = resolve_alias(settings.tracking, settings.tracking.alias)
    bundle = load_bundle(path)  # weights written from the GPU load in a CPU process: device-free
    assert bundle.parts["config"]["scaling"]["use_gpu"] is True
    valid = bundle.parts["metrics"]["valid"]
    assert valid["auc_pr"] > 2 * valid["positive_rate"], valid


def test_serving_the_gpu_trained_bundle_matches_offline_scores(trained):
    from mlinfra_ray.bundle import load_bundle
    from mlinfra_ray.compose import compose_settings
    from mlinfra_ray.ingest import read_clean
    from mlinfra_ray.registry import resolve_alias

    root, _ = trained
    settings = compose_settings([f"paths.root={root}"])
    path, _ = resolve_alias(settings.tracking, settings.tracking.alias)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    server = subprocess.Popen([sys.executable, "jobs/serve.py", *COMMON, f"paths.root={root}",
                               f"serve.port={port}", f"serve.bundle_path={path}", "drift.enabled=false"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read()[-4000:]
            time.sleep(1)
        rows = read_clean(settings.paths.lake, settings.contract).slice(0, 32).drop_columns(
            [settings.contract.label])
        records = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                   for r in rows.to_pylist()]
        resp = httpx.post(f"{base}/predict", json={"records": records}, timeout=60)
        assert resp.status_code == 200, resp.text
        served = [p["score"] for p in resp.json()["predictions"]]
        offline = load_bundle(path).predict(pa.Table.from_pylist(rows.to_pylist(), schema=rows.schema))
        assert max(abs(a - b) for a, b in zip(served, offline, strict=True)) <= 1e-5
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
