"""Write the synthetic messy raw files (CSV + JSON Lines) under paths.raw.

    python jobs/generate.py data.synthetic.rows=100000 data.synthetic.drift=shift
"""

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.pipeline import run_generate


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(run_generate(to_settings(cfg)))


if __name__ == "__main__":
    main()
