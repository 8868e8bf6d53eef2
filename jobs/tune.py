"""Sweep hyperparameters with Ray Tune (Optuna TPE + ASHA), each trial a TorchTrainer run; the best
trial is calibrated, evaluated, bundled, registered as `challenger` and gated against `champion`.

    python jobs/tune.py tune.num_samples=8                          # search space: conf/tune
    python jobs/tune.py tune.name=<printed name> tune.resume=true   # restore an interrupted sweep
    ray job submit --working-dir . -- python jobs/tune.py paths.root=/shared/mlinfra ray=cluster
"""

import hydra
from omegaconf import DictConfig

from mlinfra_ray.cluster import connect
from mlinfra_ray.compose import to_settings
from mlinfra_ray.pipeline import load_manifest
from mlinfra_ray.tune import describe, run_sweep


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    settings = to_settings(cfg)
    cluster = connect(settings.ray)
    result = run_sweep(settings, cluster, load_manifest(settings.paths.lake)["snapshot_id"])
    print(describe(result), flush=True)
    return result.stage.metrics["auc_pr"]


if __name__ == "__main__":
    main()
