"""Spectrum-to-DOS networks, their ensembles, checkpoints and batched inference (torch; no Qt)."""

from napari_corefit.model.checkpoint import LoadedModel, load_default, load_model, save_model
from napari_corefit.model.inference import (Cancelled, SignalPrediction, predict_signal,
                                            predict_spectra, resolve_device)
from napari_corefit.model.network import ARCHITECTURES, Ensemble, build_network
from napari_corefit.model.ood import ood_score

__all__ = [
    "ARCHITECTURES",
    "Cancelled",
    "Ensemble",
    "LoadedModel",
    "SignalPrediction",
    "build_network",
    "load_default",
    "load_model",
    "ood_score",
    "predict_signal",
    "predict_spectra",
    "resolve_device",
    "save_model",
]
