"""Spectrum-to-DOS networks and the ensemble that wraps them.

Every network maps a batch of spectra on the input grid, shape (B, n_in), to the occupied and
unoccupied site DOS on the output grid, shape (B, 2, n_out) (channel 0 occupied, 1 unoccupied).
An :class:`Ensemble` stacks its members' outputs, shape (M, B, 2, n_out); its mean is the
prediction and its spread the per-energy uncertainty.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PaperMLP", "Ensemble", "build_network", "ARCHITECTURES"]


class PaperMLP(nn.Module):
    """The paper's MLP: n_in -> hidden... -> 2 * n_out, ReLU and dropout between layers.

    Chen et al. (2023) use 160 -> 160 -> 120 -> 300 with dropout 0.27 for one DOS curve; here the
    last layer gives both curves (occupied and unoccupied).
    """

    def __init__(self, n_in=160, n_out=300, hidden=(160, 120), dropout=0.27):
        super().__init__()
        layers, width = [], n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 2 * n_out))
        self.body = nn.Sequential(*layers)
        self.n_out = n_out

    def forward(self, x):
        return self.body(x).view(x.shape[0], 2, self.n_out)


ARCHITECTURES = {"paper_mlp": PaperMLP}


def build_network(arch: dict) -> nn.Module:
    """Build a network from its config, e.g. ``{"name": "paper_mlp", "hidden": [160, 120]}``."""
    arch = dict(arch)
    name = arch.pop("name")
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**arch)


class Ensemble(nn.Module):
    """Members of one architecture trained with different seeds; forward gives (M, B, 2, n_out)."""

    def __init__(self, members):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members])

    @torch.no_grad()
    def mean_std(self, x):
        """Mean and standard deviation over members, each (B, 2, n_out)."""
        y = self(x)
        if y.shape[0] == 1:
            return y[0], torch.zeros_like(y[0])
        return y.mean(0), y.std(0)
