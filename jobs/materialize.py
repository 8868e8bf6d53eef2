"""Feature store, online side: copy the latest row per entity of every view from the offline store
to the online store (SQLite by default, `online_store=redis` for clusters). Incremental: only the
offline writes not yet applied are read.

    python jobs/materialize.py paths.root=/shared/mlinfra
    python jobs/materialize.py online_store=redis online_store.url=redis://10.0.0.5:6379/0
    ray job submit --working-dir . -- python jobs/materialize.py paths.root=/shared/mlinfra ray=cluster
"""

import json

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.features.stage import run_materialize


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(json.dumps(run_materialize(to_settings(cfg)), indent=2))


if __name__ == "__main__":
    main()
