"""Spectrum-to-DOS networks and the ensemble that wraps them.

Every network maps a batch of spectra on the input grid, shape (B, n_in), to the occupied and
unoccupied site DOS on the output grid, shape (B, 2, n_out) (channel 0 occupied, 1 unoccupied).
An :class:`Ensemble` stacks its members' outputs, shape (M, B, 2, n_out); its mean is the
prediction and its spread the per-energy uncertainty.

Architectures are built from a plain dict (``{"name": ..., **kwargs}``) so that a checkpoint's JSON
config can rebuild them without pickling anything.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PaperMLP", "TwoHeadMLP", "WideTwoHeadMLP", "DeepWideTwoHeadMLP", "CNN1D", "Ensemble",
           "build_network", "ARCHITECTURES", "default_arch"]


#: Initial bias of the last layer of softplus-output networks: softplus(-3) = 0.049, close to the
#: mean of an area-normalised curve on the output grid (1 / 30 eV = 0.033), so training starts
#: near the data instead of at softplus(0) = 0.69 everywhere.
_POSITIVE_BIAS = -3.0


def _head(width, n_out, positive):
    last = nn.Linear(width, n_out)
    if positive:
        nn.init.constant_(last.bias, _POSITIVE_BIAS)
    return last


def _mlp(widths, dropout):
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    return layers


class PaperMLP(nn.Module):
    """The paper's MLP: n_in -> hidden... -> 2 * n_out, ReLU and dropout between layers.

    Chen et al. (2023) use 160 -> 160 -> 120 -> 300 with dropout 0.27 for one DOS curve; here the
    last layer gives both curves (occupied and unoccupied).
    """

    def __init__(self, n_in=160, n_out=300, hidden=(160, 120), dropout=0.27):
        super().__init__()
        widths = [n_in, *hidden]
        self.body = nn.Sequential(*_mlp(widths, dropout), nn.Linear(widths[-1], 2 * n_out))
        self.n_in, self.n_out = n_in, n_out

    def forward(self, x):
        return self.body(x).view(x.shape[0], 2, self.n_out)


class TwoHeadMLP(nn.Module):
    """A wider MLP with a shared trunk and one head per curve (occupied, unoccupied).

    The two curves live on different energy ranges and have different shapes; separate heads let
    each one spend its last layers on its own curve. ``positive`` passes the output through a
    softplus, since a DOS is never negative.
    """

    def __init__(self, n_in=160, n_out=300, trunk=(256, 256), head=(256,), dropout=0.1,
                 positive=True):
        super().__init__()
        trunk_w = [n_in, *trunk]
        self.trunk = nn.Sequential(*_mlp(trunk_w, dropout))
        head_w = [trunk_w[-1], *head]
        self.heads = nn.ModuleList(
            nn.Sequential(*_mlp(head_w, dropout), _head(head_w[-1], n_out, positive))
            for _ in range(2))
        self.positive = bool(positive)
        self.n_in, self.n_out = n_in, n_out

    def forward(self, x):
        h = self.trunk(x)
        y = torch.stack([head(h) for head in self.heads], dim=1)
        return nn.functional.softplus(y) if self.positive else y


class WideTwoHeadMLP(TwoHeadMLP):
    """:class:`TwoHeadMLP` at twice the width (512) with more dropout (0.2).

    Measured on an 18 k-site database (docs/model_experiments.md, 2026-11-25): one member scores
    a test median cosine about 0.006 higher than the 256-wide network, for about 3x the weights
    and inference arithmetic.
    """

    def __init__(self, n_in=160, n_out=300, trunk=(512, 512), head=(512,), dropout=0.2,
                 positive=True):
        super().__init__(n_in, n_out, trunk=trunk, head=head, dropout=dropout,
                         positive=positive)


class DeepWideTwoHeadMLP(WideTwoHeadMLP):
    """:class:`WideTwoHeadMLP` with a third 512-wide trunk layer (23 % more weights).

    Measured on the 43 k-site database (docs/model_experiments.md, session 23): five members
    reach validation MSE 4.26-4.29e-4 against 4.37-4.42e-4 for the wide network's same seeds.
    """

    def __init__(self, n_in=160, n_out=300, trunk=(512, 512, 512), **kwargs):
        super().__init__(n_in, n_out, trunk=trunk, **kwargs)


class CNN1D(nn.Module):
    """A small 1-D convolutional network followed by a two-headed dense decoder.

    Convolutions see local peak shapes wherever they sit on the energy axis (a shift of a feature
    by a few channels is a small change for them, a large one for a dense layer).
    """

    def __init__(self, n_in=160, n_out=300, channels=(16, 32, 32), kernel=7, hidden=256,
                 dropout=0.1, positive=True):
        super().__init__()
        convs, c_prev, length = [], 1, n_in
        for c in channels:
            # stride 2 halves the length each block; padding keeps it exact for odd kernels
            convs += [nn.Conv1d(c_prev, c, kernel, stride=2, padding=kernel // 2), nn.ReLU()]
            c_prev, length = c, (length + 1) // 2
        self.convs = nn.Sequential(*convs)
        flat = c_prev * length
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(dropout),
                          _head(hidden, n_out, positive)) for _ in range(2))
        self.positive = bool(positive)
        self.n_in, self.n_out = n_in, n_out

    def forward(self, x):
        h = self.convs(x[:, None, :]).flatten(1)
        y = torch.stack([head(h) for head in self.heads], dim=1)
        return nn.functional.softplus(y) if self.positive else y


ARCHITECTURES = {"paper_mlp": PaperMLP, "two_head_mlp": TwoHeadMLP,
                 "wide_two_head_mlp": WideTwoHeadMLP,
                 "deep_wide_two_head_mlp": DeepWideTwoHeadMLP, "cnn1d": CNN1D}


def default_arch(name="paper_mlp", n_in=160, n_out=300) -> dict:
    """The config dict of an architecture with its default settings."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return {"name": name, "n_in": int(n_in), "n_out": int(n_out)}


def build_network(arch: dict) -> nn.Module:
    """Build a network from its config, e.g. ``{"name": "paper_mlp", "hidden": [160, 120]}``.

    Examples
    --------
    >>> net = build_network({"name": "two_head_mlp", "trunk": [64], "head": [32]})
    >>> net(torch.zeros(3, 160)).shape
    torch.Size([3, 2, 300])
    """
    arch = dict(arch)
    name = arch.pop("name", None)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[name](**arch)
    except TypeError as exc:
        raise ValueError(f"bad settings for architecture {name!r}: {exc}") from None


class Ensemble(nn.Module):
    """Members of one architecture trained with different seeds; forward gives (M, B, 2, n_out)."""

    def __init__(self, members):
        super().__init__()
        if len(members) == 0:
            raise ValueError("an ensemble needs at least one member")
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
