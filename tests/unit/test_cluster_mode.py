"""Cluster mode without a cluster: node-type resources in the training plan, the job runtime_env
(what a submitted working dir holds), and the auth token lookup."""

import json
import shlex
import zipfile
from pathlib import Path

import pytest

from mlinfra_ray import submit
from mlinfra_ray.cluster import ResourceError, plan_training
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.settings import RaySettings, ScalingSettings

ROOT = Path(__file__).resolve().parents[2]


def test_worker_resources_join_the_plan():
    scaling = ScalingSettings(num_workers=2, cpus_per_worker=1, worker_resources={"cpu_worker": 1.0})
    plan = plan_training(scaling, RaySettings(), {"CPU": 3.0, "cpu_worker": 2.0})
    assert plan.resources_per_worker() == {"CPU": 1.0, "cpu_worker": 1.0}


def test_a_node_type_the_cluster_lacks_fails_fast_instead_of_hanging():
    scaling = ScalingSettings(num_workers=2, cpus_per_worker=1, worker_resources={"cpu_worker": 1.0})
    with pytest.raises(ResourceError, match="cpu_worker"):
        plan_training(scaling, RaySettings(), {"CPU": 8.0, "cpu_worker": 1.0})


def test_rayignore_mirrors_the_runtime_env_excludes():
    lines = (ROOT / ".rayignore").read_text().splitlines()
    assert [x for x in lines if x and not x.startswith("#")] == submit.EXCLUDES


def test_runtime_env_carries_the_code_version_and_quiet_logs():
    env = submit.runtime_env("abc123")
    assert env["env_vars"]["MLINFRA_GIT_SHA"] == "abc123"
    assert env["env_vars"]["RAY_DATA_DISABLE_PROGRESS_BARS"] == "1"
    assert json.loads(json.dumps(env)) == env  # what --runtime-env-json receives


def make_tree(root: Path, with_rayignore: bool) -> None:
    files = ["jobs/train.py", "conf/config.yaml", "conf/data/fraud_synth.yaml", "mlinfra_ray/a.py",
             "cluster/cluster.env", ".venv/bin/python", ".mlinfra/lake/part.parquet", ".git/HEAD",
             "data/raw.csv", "stray.csv", "outputs/x.log", "mlinfra_ray/__pycache__/a.pyc", "mlflow.db"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    if with_rayignore:
        (root / ".rayignore").write_text((ROOT / ".rayignore").read_text())


@pytest.mark.parametrize("how", ["runtime_env", "rayignore"])
def test_the_uploaded_working_dir_holds_code_and_conf_only(tmp_path, how):
    """Packaged by Ray's own function, as `ray job submit` and the SDK do."""
    from ray._private.runtime_env.packaging import create_package

    make_tree(tmp_path / "wd", with_rayignore=how == "rayignore")
    excludes = submit.EXCLUDES if how == "runtime_env" else []
    create_package(str(tmp_path / "wd"), tmp_path / "p.zip", include_gitignore=True, excludes=excludes)
    names = {n for n in zipfile.ZipFile(tmp_path / "p.zip").namelist() if not n.endswith("/")}
    names.discard(".rayignore")
    assert names == {"jobs/train.py", "conf/config.yaml", "conf/data/fraud_synth.yaml", "mlinfra_ray/a.py",
                     "cluster/cluster.env"}


def test_token_lookup_follows_rays_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    with pytest.raises(submit.AuthTokenMissing, match="ray get-auth-token"):
        submit.auth_token()
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert submit.auth_token() == "from-home"
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert submit.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.auth_headers() == {"Authorization": "Bearer from-env"}


def test_submit_cli_prints_the_runtime_env_and_needs_an_entrypoint(capsys):
    assert submit.main(["--print-runtime-env"]) == 0
    assert json.loads(capsys.readouterr().out)["excludes"] == submit.EXCLUDES
    with pytest.raises(SystemExit):
        submit.main(["--address", "http://127.0.0.1:1"])


def test_the_readme_multirun_grid_expands_to_four_valid_runs():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    line = next(x for x in (ROOT / "README.md").read_text().splitlines() if "jobs/train.py --multirun" in x)
    args = [a for a in shlex.split(line)[2:] if a != "--multirun"]
    (runs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    settings = [compose_settings(run) for run in runs]
    assert {(s.trainer.lr, tuple(s.model.hidden)) for s in settings} == {
        (lr, h) for lr in (0.001, 0.003) for h in ((64, 32), (128, 64))}
