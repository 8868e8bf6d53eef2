"""From laptop to cluster, on this machine: `ray start --head` on 127.0.0.1 with token auth on, a
training job submitted with the `ray job submit` CLI, every entry point started through the SDK, a
failing job reported FAILED with its error in the logs, then only this head is stopped.

The extended tier also submits the whole pipeline with the CLI and with the SDK, and a Hydra
multirun grid (`make test-all`). CI's share costs about 2 minutes on 2 cores.
"""

import json
from pathlib import Path

import httpx
import pytest
from lakes import build_lake
from ray_procs import cli_submit, cluster_pids, start_head, stop_cluster

from mlinfra_ray import submit
from mlinfra_ray.bundle import load_bundle
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.registry import resolve_alias
from tests.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"  # stands in for `git rev-parse HEAD`
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def head():
    head = start_head(num_cpus=2)
    try:
        yield head
    finally:
        left = stop_cluster(head.temp_dir)
        assert not left, f"head processes still alive after stop: {sorted(left)}"


@pytest.fixture
def token_env(head, monkeypatch):
    """mlinfra_ray.submit reads the token like Ray does; give it this head's token only."""
    monkeypatch.setenv("RAY_AUTH_TOKEN", head.token)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)


def pipeline(root: Path, *extra: str) -> str:
    return " ".join(["python", "jobs/pipeline.py", "debug=fast", "ray=cluster", f"paths.root={root}",
                     f"serve.port={free_port()}", *extra])


def test_the_jobs_api_refuses_requests_without_the_token(head):
    assert httpx.get(f"{head.dashboard_url}/api/jobs/", timeout=30).status_code == 401
    assert httpx.get(f"{head.dashboard_url}/api/jobs/", headers={"Authorization": "Bearer wrong"},
                     timeout=30).status_code in (401, 403)
    ok = httpx.get(f"{head.dashboard_url}/api/jobs/", headers=head.auth_headers, timeout=30)
    assert ok.status_code == 200


@pytest.fixture(scope="module")
def cli_train(head, tmp_path_factory):
    """`jobs/train.py` submitted with the `ray job submit` CLI, as the README documents it, on a lake
    built beforehand (in this process: the job under test is the submitted one)."""
    root = build_lake(tmp_path_factory.mktemp("cli"), ["debug=fast", "data.synthetic.rows=6000"])
    code, out = cli_submit(head, ["python", "jobs/train.py", "debug=fast", "ray=cluster", f"paths.root={root}",
                                  "trainer.max_epochs=2"], SHA)
    return root, code, out


def test_training_submitted_with_the_cli(cli_train):
    root, code, out = cli_train
    assert code == 0 and "succeeded" in out, out[-6000:]
    assert "Uploading package" in out and "test AUC-PR" in out
    # the registry the job wrote is readable here, and lineage carries the SHA from the runtime_env
    path, info = resolve_alias(compose_settings([f"paths.root={root}"]).tracking, "champion")
    assert info["tags"]["git_sha"] == SHA and load_bundle(path).parts["lineage"]["git_sha"] == SHA


@pytest.mark.extended  # CI submits the training job with the CLI; the whole pipeline costs ~2 minutes
def test_pipeline_submitted_with_the_cli(head, tmp_path):
    code, out = cli_submit(head, pipeline(tmp_path).split(), SHA)
    assert code == 0 and "succeeded" in out, out[-6000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    ing = summary["ingest"]
    assert ing["rows_in"] == ing["clean"] + ing["quarantined"] + ing["duplicates_removed"] > 0
    assert summary["train"]["test"]["auc_pr"] > summary["train"]["test"]["positive_rate"]
    assert summary["serve"]["served_matches_offline"] and summary["serve"]["shifted_drift"] is True
    path, info = resolve_alias(compose_settings([f"paths.root={tmp_path}"]).tracking, "champion")
    assert info["tags"]["git_sha"] == SHA and load_bundle(path).parts["lineage"]["git_sha"] == SHA
    assert "Uploading package" in out and "mlinfra_ray pipeline summary" in out


@pytest.mark.extended  # submit.submit (the SDK) is in CI through the failing-job and entry-point tests
def test_a_hydra_multirun_grid_runs_inside_one_submitted_job(head, cli_train, token_env):
    """The documented small-study grid: 2 learning rates, sequential runs in one job (one driver,
    one `ray.init`), each registered as its own model version."""
    root, code, _ = cli_train
    assert code == 0
    grid = (f"python jobs/train.py --multirun ray=cluster paths.root={root} trainer.max_epochs=1 "
            "scaling.num_workers=1 trainer.lr=0.001,0.003")
    outcome = submit.wait(submit.submit(grid, head.dashboard_url, ROOT, sha=SHA), head.dashboard_url, 900)
    assert outcome.status == "SUCCEEDED", outcome.logs[-6000:]
    assert "Launching 2 jobs locally" in outcome.logs and outcome.logs.count("test AUC-PR") == 2
    sweeps = sorted((root / "multirun").glob("*/*/.hydra/overrides.yaml"))
    assert [("trainer.lr=0.001" in p.read_text(), "trainer.lr=0.003" in p.read_text()) for p in sweeps] == \
        [(True, False), (False, True)]


@pytest.mark.extended  # the CLI pipeline is in CI; the SDK path is too, through the cheaper jobs below
def test_pipeline_submitted_with_the_sdk(head, tmp_path, token_env):
    small = ["data.synthetic.rows=6000", "trainer.max_epochs=1", "serve.demo.clean_requests=80",
             "serve.demo.drift_requests=80"]
    job_id = submit.submit(pipeline(tmp_path, *small), head.dashboard_url, ROOT, sha=SHA)
    outcome = submit.wait(job_id, head.dashboard_url, timeout_s=900)
    assert outcome.status == "SUCCEEDED", outcome.logs[-6000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["generated"]["rows_written"] == summary["ingest"]["rows_in"] > 0
    assert summary["train"]["registry"]["alias"] == "champion"
    assert summary["serve"]["metrics_requests_total"] == summary["serve"]["requests_sent"] > 0
    # the SDK path sent the same runtime_env: data, venv and caches stayed behind
    info = submit.client(head.dashboard_url).get_job_info(job_id)
    assert set(info.runtime_env["excludes"]) >= {"/.venv/", "/.mlinfra/", "/.git/", "__pycache__/"}


def test_a_failing_job_is_reported_failed_with_its_error(head, tmp_path, token_env):
    # train before ingest: no clean snapshot under this root
    job_id = submit.submit(f"python jobs/train.py ray=cluster paths.root={tmp_path}", head.dashboard_url, ROOT)
    outcome = submit.wait(job_id, head.dashboard_url, timeout_s=300)
    assert outcome.status == "FAILED"
    assert "FileNotFoundError" in outcome.logs and "run the ingest stage first" in outcome.logs


def test_every_job_entry_point_starts_in_a_submitted_job(head, tmp_path, token_env):
    """Each jobs/*.py imports and composes its config inside the uploaded working dir."""
    names = sorted(p.name for p in (ROOT / "jobs").glob("*.py"))
    job_id = submit.submit(f"python tests/e2e/check_jobs.py {tmp_path}", head.dashboard_url, ROOT)
    outcome = submit.wait(job_id, head.dashboard_url, timeout_s=600)
    assert outcome.status == "SUCCEEDED", outcome.logs[-4000:]
    assert all(f"ok {n}" in outcome.logs for n in names), outcome.logs[-4000:]


def test_submit_module_cli_reports_the_outcome(head, tmp_path, token_env, capsys):
    code = submit.main(["--address", head.dashboard_url, "--working-dir", str(ROOT), "--",
                        "python", "-c", "import sys; print('hello from the job'); sys.exit(3)"])
    out = capsys.readouterr().out
    assert code == 1 and "hello from the job" in out and "FAILED" in out


def test_only_this_head_is_running_under_its_temp_dir(head):
    assert cluster_pids(head.temp_dir), "the head's processes should be found by its temp dir"
