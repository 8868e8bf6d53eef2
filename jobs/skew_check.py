"""Online/offline skew check: for a seeded sample of entities per view, compare the online row
with the offline store's latest row, bit for bit. Prints the report; exits non-zero when the
mismatch fraction is above features.skew_check.max_mismatch_fraction.

    python jobs/skew_check.py paths.root=/shared/mlinfra features.skew_check.sample_entities=500
    ray job submit --working-dir . -- python jobs/skew_check.py paths.root=/shared/mlinfra online_store=redis
"""

import json
import sys

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.features.stage import run_skew_check


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    settings = to_settings(cfg)
    report = run_skew_check(settings)
    print(json.dumps(report, indent=2))
    if report["mismatch_fraction"] > settings.features.skew_check.max_mismatch_fraction:
        sys.exit(f"skew check failed: {report['mismatches']} of {report['sampled']} sampled entities differ")
    return report["mismatch_fraction"]


if __name__ == "__main__":
    main()
