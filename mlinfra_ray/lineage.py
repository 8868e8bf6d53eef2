"""Lineage tags recorded with every run, bundle and model version."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from mlinfra_ray.settings import Settings, to_dict


def config_hash(settings: Settings) -> str:
    blob = json.dumps(to_dict(settings), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_sha() -> str:
    """The code version; a submitted job's working dir has no .git, so MLINFRA_GIT_SHA wins."""
    if os.environ.get("MLINFRA_GIT_SHA"):
        return os.environ["MLINFRA_GIT_SHA"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def lineage_tags(settings: Settings, snapshot_id: str) -> dict[str, str]:
    return {"data_snapshot": snapshot_id, "git_sha": git_sha(), "config_hash": config_hash(settings),
            "contract": settings.contract.name, "dataset": settings.data.name}
