"""Ingest raw files against the data contract: clean Parquet, quarantine, manifest, quality report.
Exits non-zero (DataQualityError) when the quarantine fraction is over the contract's budget.

    python jobs/ingest.py paths.raw=/data/incoming contract=fraud
    ray job submit --working-dir . -- python jobs/ingest.py paths.root=/shared/mlinfra ray=cluster
"""

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.pipeline import run_ingest


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = run_ingest(to_settings(cfg))
    print(f"rows in {result.rows_in} = clean {result.clean} + quarantined {result.quarantined} "
          f"+ duplicates {result.duplicates_removed}; report: {result.report_path}")


if __name__ == "__main__":
    main()
