"""Every YAML under conf/ composes and converts to typed settings; bad keys are named."""

from pathlib import Path

import pytest

from mlinfra_ray.compose import CONF_DIR, compose_settings
from mlinfra_ray.contract import validate_contract
from mlinfra_ray.settings import Settings, SettingsError

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]


def test_every_group_has_options():
    assert {"data", "contract", "features", "model", "trainer", "scaling", "serve", "drift", "ray",
            "tracking", "paths", "experiment", "debug"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_each_option_composes(group, option):
    settings = compose_settings([f"{group}={option}"])
    assert isinstance(settings, Settings)
    validate_contract(settings.contract)


def test_paths_are_absolute_and_tracking_follows_root(tmp_path):
    s = compose_settings([f"paths.root={tmp_path}"])
    assert Path(s.paths.lake).is_absolute() and s.paths.lake.startswith(str(tmp_path))
    assert s.tracking.uri == f"sqlite:///{tmp_path}/mlflow.db"


def test_overrides_reach_settings():
    s = compose_settings(["trainer.max_epochs=2", "scaling.num_workers=1"])
    assert s.trainer.max_epochs == 2 and s.scaling.num_workers == 1


@pytest.mark.parametrize(("override", "key"), [
    ("+trainer.bogus=1", "trainer.bogus"),
    ("trainer.lr=fast", "trainer.lr"),
    ("data.synthetic.drift=sideways", "data.synthetic.drift"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        compose_settings([override])
