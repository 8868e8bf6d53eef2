"""cluster.yaml validates against Ray's own autoscaler schema, offline (no cloud credentials)."""

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def validate(cfg: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_cluster_yaml_is_valid():
    validate(yaml.safe_load((ROOT / "cluster.yaml").read_text()))


def test_a_typo_is_caught():
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["idle_timeout_minutse"] = 5
    with pytest.raises(Exception, match="idle_timeout_minutse"):
        validate(cfg)
