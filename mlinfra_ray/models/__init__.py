"""Model families: one readable file each, built from plain config dicts."""

from __future__ import annotations

from typing import Any

import torch

from mlinfra_ray.models.mlp import MLP


def build_model(model: dict[str, Any], n_features: int) -> torch.nn.Module:
    if model["name"] == "mlp":
        return MLP(n_features, model["hidden"], model["dropout"])
    raise ValueError(f"model.name: unknown model family {model['name']!r}")
