"""Spectrum-to-DOS networks, their ensembles and checkpoints (torch; no Qt)."""

from napari_corefit.model.checkpoint import LoadedModel, load_default, load_model, save_model
from napari_corefit.model.network import ARCHITECTURES, Ensemble, build_network

__all__ = [
    "ARCHITECTURES",
    "Ensemble",
    "LoadedModel",
    "build_network",
    "load_default",
    "load_model",
    "save_model",
]
