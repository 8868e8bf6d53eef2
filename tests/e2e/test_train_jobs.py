"""Training jobs as users run them (subprocesses, each with its own 2-CPU Ray cluster) against a
real `mlflow server` on loopback (the documented server mode): an interrupted sweep restored with
`Tuner.restore`, its best trial gated into `champion`, a promotion through jobs/promote.py and a
rollback through jobs/rollback.py."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from lakes import build_lake

from mlinfra_ray import registry
from mlinfra_ray.bundle import load_bundle
from mlinfra_ray.compose import compose_settings
from tests.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SMALL = ["debug=fast", "ray.num_cpus=2", "data.synthetic.rows=4000", "data.synthetic.n_users=200",
         "trainer.max_epochs=2", "scaling.num_workers=1"]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def run_job(script: str, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, f"jobs/{script}", *overrides], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-6000:]}\n-- stdout --\n{proc.stdout[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return build_lake(tmp_path_factory.mktemp("train_jobs"), SMALL)


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1:<free port>, sqlite backend, proxied artifacts; stopped by PID."""
    port = free_port()
    log = open(tmp_path / "mlflow.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
                             "--artifacts-destination", str(tmp_path / "artifacts")],
                            stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not come up"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its uvicorn worker
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def finished_trials(sweep_dir: Path, epochs: int = 2) -> set[str]:
    """Trials whose synced results reached the last epoch (FIFO scheduler: none stop early)."""
    done = set()
    for result in sweep_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        if any(r.get("training_iteration") == epochs for r in rows):
            done.add(result.parent.name)
    return done


def train_checkpoints(lake: Path, run: str) -> set[str]:
    return {p.name for p in (lake / "ray_results" / run).glob("checkpoint_*") if p.is_dir()}


def test_interrupted_sweep_restore_then_gate_and_rollback_through_an_mlflow_server(lake, mlflow_server,
                                                                                   tmp_path):
    """One user journey (one Ray start per job, one server): sweep → Ctrl-C → Tuner.restore →
    best trial registered and gated over HTTP → a second version promoted → rolled back."""
    name, tracking = "sweep-restore-test", ["tracking=server", f"tracking.uri={mlflow_server}"]
    sweep = [*SMALL, f"paths.root={lake}", *tracking, f"tune.name={name}", "tune.num_samples=2",
             "tune.scheduler=fifo"]  # the default searcher: Optuna
    sweep_dir, log_path = lake / "ray_results" / name, lake / "tune_first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen([sys.executable, "jobs/tune.py", *sweep], cwd=ROOT, env=env(), stdout=log,
                                 stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 400
        # Tune syncs trial results to storage lazily; its console line is the prompt signal.
        while "completed after" not in log_path.read_text() and first.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)  # what Ctrl-C or a job runner's stop does
        first.wait(timeout=180)
    done_before = finished_trials(sweep_dir)  # Tune writes its state once more on SIGINT
    out = log_path.read_text()
    assert len(done_before) == 1, out[-3000:]
    assert first.returncode != 0 and "tune.resume=true" in out  # no winner registered from half a sweep
    settings = compose_settings([f"paths.root={lake}", *tracking])
    assert registry.alias_version(settings.tracking, "challenger") is None
    before = {t: train_checkpoints(lake, f"{name}-{t}") for t in done_before}
    assert all(before.values())

    second = run_job("tune.py", *sweep, "tune.resume=true")
    assert "2 trials, 0 failed" in second.stdout, second.stdout[-3000:]
    assert len(finished_trials(sweep_dir)) == 2
    assert {t: train_checkpoints(lake, f"{name}-{t}") for t in done_before} == before  # not re-run
    assert "as 'champion'" in second.stdout  # the first model only has to pass the sanity checks

    path, info = registry.resolve_alias(settings.tracking, "champion", tmp_path / "v1")  # over HTTP
    assert info["version"] == "1" and info["tags"]["sweep"] == name
    assert load_bundle(path).parts["lineage"]["data_snapshot"]
    again = registry.register_bundle(path, settings.tracking, {}, {}, {"run_name": "re-registered"},
                                     alias="challenger")
    assert again["source"].startswith("mlflow-artifacts:")  # artifacts go through the server
    gate = run_job("promote.py", f"paths.root={lake}", *tracking, "tracking.promotion.min_improvement=-0.01")
    decision = json.loads(gate.stdout.split("GATE_JSON ", 1)[1])
    assert decision["decision"] == "promoted" and decision["champion_version"] == "1"
    assert registry.alias_version(settings.tracking, "champion") == again["version"]

    rolled = run_job("rollback.py", f"paths.root={lake}", *tracking)
    assert f"v{again['version']} -> v1" in rolled.stdout
    assert registry.alias_version(settings.tracking, "champion") == "1"
