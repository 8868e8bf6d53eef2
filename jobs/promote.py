"""Promotion gate: judge the `challenger` against the `champion` on the latest holdout window and
move `champion` only if the challenger wins by tracking.promotion.min_improvement and passes the
sanity checks. The decision and its numbers are recorded in MLflow. Exits 0 either way; the last
line is the decision as JSON.

    python jobs/promote.py                                        # uses conf/tracking promotion
    python jobs/promote.py tracking.promotion.min_improvement=0.01
"""

import json

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.promotion import promote, summary
from mlinfra_ray.train.data import holdout


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    settings = to_settings(cfg)
    decision = promote(settings, holdout(settings))
    print("GATE_JSON " + json.dumps(summary(decision), default=str), flush=True)


if __name__ == "__main__":
    main()
