"""Test set-up: a small ingested lake built in the test process, without starting Ray.

The job tests need a lake to work on, not another run of the generate and ingest jobs (those run
as Ray jobs in test_pipeline.py and test_ingest_s3.py); skipping two Ray starts saves ~25 s each.
"""

from pathlib import Path

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.ingest import ingest
from mlinfra_ray.pipeline import run_generate


def build_lake(root: Path, overrides: list[str]) -> Path:
    settings = compose_settings([*overrides, f"paths.root={root}"])
    run_generate(settings)
    result = ingest(settings.paths.raw, settings.paths.lake, settings.contract, use_ray=False)
    assert result.rows_in == result.clean + result.quarantined + result.duplicates_removed > 0
    return root
