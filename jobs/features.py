"""Feature store, offline side: fit the FeatureState on the training window (versioned JSON) and
append every feature view's new rows (entity aggregations computed with Ray Data) to the offline
Parquet store. Re-runs write only rows newer than each view's high-water mark.

    python jobs/features.py paths.root=/shared/mlinfra
    python jobs/features.py features=fraud_store          # views also feed the fitted state
    ray job submit --working-dir . -- python jobs/features.py paths.root=/shared/mlinfra ray=cluster
"""

import json

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.features.stage import run_features


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(json.dumps(run_features(to_settings(cfg)), indent=2))


if __name__ == "__main__":
    main()
