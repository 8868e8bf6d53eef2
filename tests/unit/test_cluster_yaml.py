"""cluster.yaml validates against Ray's own autoscaler schema, offline (no cloud credentials), and
keeps its security and storage promises: token auth on every node, no Ray port open to the
internet, node types that match the scaling presets, set-up through the README's install."""

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from mlinfra_ray.compose import compose_settings

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def start_commands(cfg: dict) -> list[str]:
    return cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]


def test_cluster_yaml_is_valid():
    validate(load())


def test_a_typo_is_caught():
    cfg = load()
    cfg["idle_timeout_minutse"] = 5
    with pytest.raises(Exception, match="idle_timeout_minutse"):
        validate(cfg)


def test_a_typo_inside_a_node_type_is_caught():
    cfg = load()
    cfg["available_node_types"]["gpu_worker"]["min_worker"] = 1
    with pytest.raises(Exception, match="min_worker"):
        validate(cfg)


def test_node_types_head_cpu_and_gpu_workers_with_bounds():
    cfg = validate(load())
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] == "head" and {"cpu_worker", "gpu_worker"} <= set(types)
    for name in ("cpu_worker", "gpu_worker"):
        assert 0 <= types[name]["min_workers"] <= types[name]["max_workers"]
    assert cfg["idle_timeout_minutes"] > 0 and cfg["provider"]["type"] == "aws"
    assert "g5" in types["gpu_worker"]["node_config"]["InstanceType"]


def test_every_ray_start_runs_with_token_auth_and_the_token_is_mounted():
    cfg = load()
    ray_starts = [c for c in start_commands(cfg) if "ray start" in c]
    assert len(ray_starts) == 2
    ray_commands = [c for c in start_commands(cfg) if "bin/ray " in c]
    assert len(ray_commands) == 4 and all("RAY_AUTH_MODE=token" in c for c in ray_commands)
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    setups = cfg["head_setup_commands"] + cfg["worker_setup_commands"] + \
        cfg["available_node_types"]["gpu_worker"]["worker_setup_commands"]
    assert all("chmod 600 ~/.ray/auth_token" in c for c in setups)
    assert not any("RAY_AUTH_MODE=disabled" in c for c in start_commands(cfg) + setups)


def test_no_port_is_opened_to_the_internet():
    cfg = load()
    assert "IpPermissions" not in cfg["provider"].get("security_group", {})
    head_start = next(c for c in cfg["head_start_ray_commands"] if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head_start  # dashboard + Jobs API: SSH tunnel only
    assert "0.0.0.0" not in (ROOT / "cluster.yaml").read_text().split("provider:")[1]
    services = (ROOT / "cluster" / "head_services.sh").read_text()
    assert '--web.listen-address="127.0.0.1:' in services and "0.0.0.0" not in services


def test_setup_installs_like_the_readme_and_keeps_data_off_the_nodes():
    cfg = load()
    node_setup = (ROOT / "cluster" / "node_setup.sh").read_text()
    assert "make -C \"$REPO\" install" in node_setup and "install: $(STAMP)" in (ROOT / "Makefile").read_text()
    assert cfg["file_mounts"]["~/mlinfra_ray"] == "."
    assert {".venv", ".mlinfra", ".git"} <= set(cfg["rsync_exclude"]) and ".rayignore" in cfg["rsync_filter"]


def test_shared_storage_is_required_not_node_local():
    env = (ROOT / "cluster" / "cluster.env").read_text()
    assert re.search(r"^MLINFRA_HOME=/mnt/mlinfra$", env, re.M)
    assert "REPLACE-ME" in (ROOT / "cluster" / "node_setup.sh").read_text()  # refuses to run unset
    settings = compose_settings(["experiment=cpu_cluster"])
    assert settings.ray.address == "auto" and settings.tracking.uri.startswith("http")


@pytest.mark.parametrize(("preset", "node_type"), [("cpu_multi", "cpu_worker"), ("gpu_multi", "gpu_worker")])
def test_scaling_presets_target_node_types_that_exist(preset, node_type):
    cfg = load()
    scaling = compose_settings([f"scaling={preset}"]).scaling
    advertised = cfg["available_node_types"][node_type]["resources"]
    assert set(scaling.worker_resources) <= set(advertised)
    assert scaling.num_workers <= cfg["available_node_types"][node_type]["max_workers"]


@pytest.mark.parametrize("script", ["node_setup.sh", "head_services.sh"])
def test_cluster_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "cluster" / script)], check=True)
