"""Train on the latest clean snapshot, evaluate on the later window, register the bundle as
`challenger` and run the promotion gate against `champion` (tracking.promotion).

    python jobs/train.py trainer.max_epochs=2 scaling.num_workers=1
    python jobs/train.py trainer.run_name=nightly trainer.resume=true   # resubmittable: continues
    python jobs/train.py scaling=gpu_1x                     # on a GPU machine
    ray job submit --working-dir . -- python jobs/train.py paths.root=/shared/mlinfra ray=cluster
"""

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.pipeline import run_train


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    result = run_train(to_settings(cfg))
    m = result.metrics
    print(f"run {result.run_name}: test AUC-PR {m['auc_pr']:.3f} (baseline {m['positive_rate']:.3f}), "
          f"AUC-ROC {m['auc_roc']:.3f}; registered {result.registry['name']} "
          f"v{result.registry['version']} as '{result.registry['alias']}'")
    if result.gate:
        print(f"gate: {result.gate['decision']} ({result.gate['reason']})")
    return m["auc_pr"]


if __name__ == "__main__":
    main()
