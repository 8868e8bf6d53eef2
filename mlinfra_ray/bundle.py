"""The model bundle: the one unit that moves from training to evaluation, registry and serving.

A folder of plain files — weights (safetensors), fitted feature state, data contract, drift
reference sample (.npy, loaded with allow_pickle=False), resolved config, lineage and metrics (JSON)
— plus MANIFEST.json with the sha256 of every file. `load_bundle` verifies the manifest before
reading anything, so a tampered or truncated bundle is refused, never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file, save_file

from mlinfra_ray.features.transforms import transform
from mlinfra_ray.models import build_model
from mlinfra_ray.settings import ContractSettings, build

FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
JSON_PARTS = ("feature_state", "contract", "model", "config", "lineage", "metrics", "drift")


class BundleError(RuntimeError):
    """A bundle that fails verification or cannot be read; names the file."""


@dataclass
class Bundle:
    path: Path
    model: torch.nn.Module
    parts: dict[str, Any]  # the JSON parts by name

    @property
    def feature_state(self) -> dict[str, Any]:
        return self.parts["feature_state"]

    @property
    def contract(self) -> ContractSettings:
        return build(ContractSettings, self.parts["contract"])

    @property
    def threshold(self) -> float:
        return float(self.parts["metrics"].get("threshold", 0.5))

    def drift_reference(self) -> np.ndarray:
        return np.load(self.path / "drift_reference.npy", allow_pickle=False)

    def predict(self, table: pa.Table) -> np.ndarray:
        """Fraud probability per row of a contract-typed table (the serving and eval path)."""
        return score(self.model, transform(self.feature_state, table))


def score(model: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(features))).numpy().astype(np.float64)


def save_bundle(path: str | Path, state_dict: dict[str, torch.Tensor], parts: dict[str, Any],
                drift_reference: np.ndarray) -> Path:
    """Write a bundle folder; `parts` holds every name in JSON_PARTS."""
    missing = [p for p in JSON_PARTS if p not in parts]
    if missing:
        raise BundleError(f"bundle parts missing: {missing}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=False)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, out / "model.safetensors")
    np.save(out / "drift_reference.npy", drift_reference.astype(np.float32), allow_pickle=False)
    for name in JSON_PARTS:
        (out / f"{name}.json").write_text(json.dumps(parts[name], indent=2, sort_keys=True, default=str))
    files = sorted(p.name for p in out.iterdir())
    manifest = {"format_version": FORMAT_VERSION, "files": {f: _sha256(out / f) for f in files}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


def verify_bundle(path: str | Path) -> dict[str, str]:
    """Check every file against the manifest; raises BundleError naming the first bad file."""
    root = Path(path)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise BundleError(f"{root}: unreadable {MANIFEST}: {err}") from err
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{root}: bundle format {manifest.get('format_version')} != {FORMAT_VERSION}")
    for name, digest in manifest["files"].items():
        f = root / name
        if not f.is_file():
            raise BundleError(f"{f}: listed in the manifest but missing")
        if _sha256(f) != digest:
            raise BundleError(f"{f}: sha256 mismatch (tampered or truncated); refusing to load")
    extra = {p.name for p in root.iterdir()} - set(manifest["files"]) - {MANIFEST}
    if extra:
        raise BundleError(f"{root}: files not in the manifest: {sorted(extra)}")
    return manifest["files"]


def load_bundle(path: str | Path) -> Bundle:
    root = Path(path)
    verify_bundle(root)
    parts = {name: json.loads((root / f"{name}.json").read_text()) for name in JSON_PARTS}
    model = build_model(parts["model"], len(parts["feature_state"]["feature_names"]))
    model.load_state_dict(load_file(root / "model.safetensors"))
    model.eval()
    return Bundle(root, model, parts)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
