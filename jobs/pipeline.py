"""The whole loop on one config: generate → ingest → train → evaluate → register → serve → drift.

    python jobs/pipeline.py                       # the embedded default (what `make demo` runs)
    python jobs/pipeline.py debug=fast            # a minute-scale run
    python jobs/pipeline.py --cfg job             # print the composed config, start nothing
    ray job submit --working-dir . -- python jobs/pipeline.py paths.root=/shared/mlinfra ray=cluster
"""

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.console import print_summary
from mlinfra_ray.pipeline import run_pipeline


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    summary = run_pipeline(to_settings(cfg))
    print_summary(summary)
    return summary["train"]["test"]["auc_pr"]


if __name__ == "__main__":
    main()
