"""Out-of-distribution score: how unlike the training inputs a spectrum is.

The ensemble's spread does not flag chemistry the model never saw (graphite, sulfur, metals):
all members can agree on a wrong answer. A PCA of the training inputs can: a spectrum that its
top components do not reconstruct is outside what the model was trained on.

The PCA is fitted at training time (:func:`fit_ood`) and stored in the checkpoint
(``ood.mean``, ``ood.components``, ``ood.variance`` tensors and the ``threshold`` scalar, see
:mod:`napari_corefit.model.checkpoint`). The score of a spectrum is its mean squared
reconstruction residual divided by the 99th percentile of the training inputs' own residuals:
1.0 is the threshold, and about 1 % of the training inputs score above it.

``fit_ood`` and ``ood_error`` are the checkpoint module's own (one definition, so that a
checkpoint's threshold and the engine's score can never disagree); this module adds the score
on arrays of any shape, computed in blocks.
"""

from __future__ import annotations

import numpy as np

from napari_corefit.model.checkpoint import fit_ood, ood_error

__all__ = ["fit_ood", "ood_error", "ood_score", "OOD_THRESHOLD"]

#: Scores above this are flagged out of distribution (the training quantile itself).
OOD_THRESHOLD = 1.0


def ood_score(ood, spectra, block=65536):
    """Out-of-distribution score of preprocessed spectra.

    Parameters
    ----------
    ood : dict or LoadedModel
        ``mean`` (n_in,), ``components`` (k, n_in), ``threshold`` as from :func:`fit_ood`, or a
        loaded model (its ``.ood``). Empty or None: no OOD model, the scores are NaN.
    spectra : array_like, shape (..., n_in)
    block : int
        Rows per block (bounds the temporary memory to ``block * n_in`` floats).

    Returns
    -------
    ndarray, shape (...), float32
        Residual over the training quantile: <= 1 for ~99 % of training-like spectra.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> basis = rng.normal(size=(3, 20))
    >>> train = rng.normal(size=(500, 3)) @ basis + 0.01 * rng.normal(size=(500, 20))
    >>> ood = fit_ood(train, n_components=3)
    >>> float(np.mean(ood_score(ood, train) <= 1))
    0.99
    >>> bool(ood_score(ood, rng.normal(size=(1, 20)))[0] > 100)
    True
    """
    ood = getattr(ood, "ood", ood)
    x = np.asarray(spectra, dtype=np.float32)
    lead = x.shape[:-1]
    if not ood:
        return np.full(lead, np.nan, np.float32)
    x = x.reshape(-1, x.shape[-1])
    out = np.empty(x.shape[0], np.float32)
    thr = np.float32(ood["threshold"])
    for i0 in range(0, x.shape[0], block):
        out[i0:i0 + block] = ood_error(x[i0:i0 + block], ood) / thr
    return out.reshape(lead)
