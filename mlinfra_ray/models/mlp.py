"""A small MLP scorer: features [B, F] → one fraud logit per row [B]."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, n_features: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)  # [B, F] -> [B]
