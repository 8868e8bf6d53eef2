"""Drift report: a new data snapshot vs the served model's reference (HTML + Markdown + JSON).

Stages: compose config → load the bundle (registry alias, or serve.bundle_path) → read the
snapshot (drift.report_data, else the clean lake) → the serving detectors on it → plots + report.

    python jobs/drift_report.py drift.report_data=/data/new_snapshot.parquet
    python jobs/drift_report.py serve.bundle_path=/path/to/bundle drift.report_dir=/tmp/report
    ray job submit --working-dir . -- python jobs/drift_report.py paths.root=/shared/mlinfra ray=cluster
"""

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.drift_report import run_drift_report


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> bool:
    summary = run_drift_report(to_settings(cfg))
    print(f"{'DRIFT' if summary['is_drift'] else 'no drift'}: {summary['report_html']}")
    return summary["is_drift"]


if __name__ == "__main__":
    main()
