"""Small EELS files the tests write themselves (real files are not in the repository)."""

import hyperspy.api as hs
import numpy as np


def save_eels(path, counts, e0, step=0.1, scale=0.25, nav_names=("x", "y"), dtype=None):
    """Write ``counts`` (navigation..., energy) as a HyperSpy-readable file with named axes in nm
    and an energy-loss axis starting at ``e0`` eV; the suffix picks the format (.hspy, .msa)."""
    s = hs.signals.Signal1D(np.asarray(counts, dtype))
    for ax, name in zip(s.axes_manager.navigation_axes, nav_names):
        ax.name, ax.units, ax.scale = name, "nm", scale
    sig = s.axes_manager.signal_axes[0]
    sig.name, sig.units, sig.offset, sig.scale = "Energy loss", "eV", e0, step
    s.save(path, overwrite=True)
    return path
