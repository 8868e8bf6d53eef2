"""Roll the serving alias back: point `champion` (tracking.alias) at the version it pointed at
before the last promotion. Recorded in MLflow; a Serve app following the alias picks it up.

    python jobs/rollback.py
    python jobs/rollback.py tracking=server tracking.uri=http://127.0.0.1:5000
"""

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.promotion import rollback


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    settings = to_settings(cfg)
    current, previous = rollback(settings)
    name, alias = settings.tracking.registered_model, settings.tracking.alias
    print(f"{name}@{alias}: v{current} -> v{previous}", flush=True)


if __name__ == "__main__":
    main()
