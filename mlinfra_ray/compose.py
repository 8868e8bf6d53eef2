"""Hydra config → typed Settings. With settings.py, the only place the library touches Hydra."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlinfra_ray.settings import Settings, build, resolve_paths

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def to_settings(cfg: DictConfig | dict[str, Any]) -> Settings:
    """Resolve interpolations, drop Hydra's own node, and build strictly typed settings.

    `paths.root` is made absolute before anything that interpolates it (tracking URI, artifact
    location) is resolved, so every derived path is absolute too.
    """
    if isinstance(cfg, DictConfig):
        cfg = cfg.copy()
        root = OmegaConf.select(cfg, "paths.root")
        if isinstance(root, str) and "://" not in root:
            OmegaConf.update(cfg, "paths.root", str(Path(root).expanduser().resolve()))
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    data.pop("hydra", None)
    settings = build(Settings, data)
    return dataclasses.replace(settings, paths=resolve_paths(settings.paths))


def compose_settings(overrides: list[str] | None = None, config_name: str = "config",
                     config_dir: Path = CONF_DIR) -> Settings:
    """Compose outside a Hydra app (tests, benchmarks, notebooks) exactly as the jobs do."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir)):
        cfg = compose(config_name=config_name, overrides=list(overrides or []))
    return to_settings(cfg)
