"""PCA denoising: keep the first components of the spectra over all pixels (truncated SVD).

The spectra of a spectrum image share a few shapes; noise spreads over all components. Keeping
the first ``n`` principal components (of the mean-centred spectra) removes most of the noise.
The components come from the eigenvectors of the channel-by-channel covariance, accumulated in
blocks of pixels, so memory stays at (channels x channels) whatever the number of pixels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pca_basis", "pca_denoise"]


def pca_basis(spectra, n_components, mask=None, chunk=16384):
    """Mean and first principal components of many spectra.

    Parameters
    ----------
    spectra : array_like, shape (..., n)
    n_components : int
    mask : array_like of bool, shape (...), optional
        Pixels that take part in the fit (e.g. the usable ones); all by default.
    chunk : int
        Pixels per block of the covariance accumulation.

    Returns
    -------
    mean : ndarray, shape (n,)
    components : ndarray, shape (n_components, n)
        Orthonormal rows, strongest first.
    explained : ndarray, shape (n_components,)
        Fraction of the variance each component carries.
    """
    y = np.asarray(spectra)
    n = y.shape[-1]
    y = y.reshape(-1, n)
    if mask is not None:
        y = y[np.asarray(mask, bool).reshape(-1)]
    if not 1 <= int(n_components) <= n:
        raise ValueError(f"n_components must be in 1..{n}, got {n_components}")
    if y.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 spectra, got {y.shape[0]}")
    mean = np.zeros(n)
    for i in range(0, y.shape[0], chunk):
        mean += y[i:i + chunk].sum(0, dtype=np.float64)
    mean /= y.shape[0]
    cov = np.zeros((n, n))
    for i in range(0, y.shape[0], chunk):
        d = y[i:i + chunk] - mean
        cov += d.T @ d
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1][:int(n_components)]
    total = max(float(w.clip(0).sum()), np.finfo(float).tiny)
    return mean, v[:, order].T.copy(), w[order].clip(0) / total


def pca_denoise(spectra, n_components, mask=None, chunk=16384):
    """Project every spectrum onto the mean + first ``n_components`` principal components.

    Parameters
    ----------
    spectra : array_like, shape (..., n)
    n_components : int
    mask : array_like of bool, shape (...), optional
        Pixels used to find the components (all pixels are projected; masked ones are
        returned unchanged).
    chunk : int

    Returns
    -------
    ndarray, float32, shape (..., n)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.linspace(0, 1, 50)
    >>> clean = np.outer(rng.random(400), np.sin(6 * x)) + np.outer(rng.random(400), x)
    >>> noisy = clean + 0.05 * rng.standard_normal(clean.shape)
    >>> den = pca_denoise(noisy, 2)
    >>> bool(np.abs(den - clean).std() < 0.3 * np.abs(noisy - clean).std())
    True
    """
    y = np.asarray(spectra)
    shape = y.shape
    flat = y.reshape(-1, shape[-1])
    mean, comps, _ = pca_basis(flat, n_components, mask, chunk)
    out = np.empty(flat.shape, dtype=np.float32)
    keep = None if mask is None else np.asarray(mask, bool).reshape(-1)
    for i in range(0, flat.shape[0], chunk):
        d = flat[i:i + chunk] - mean
        out[i:i + chunk] = mean + (d @ comps.T) @ comps
        if keep is not None:
            k = ~keep[i:i + chunk]
            out[i:i + chunk][k] = flat[i:i + chunk][k]
    return out.reshape(shape)
