"""Which pixels have a usable carbon K edge, and why the others do not.

Every pixel gets one reason code (uint8); 0 means usable. A pixel that fails several checks gets
the first failing one in the order of the table. Masked pixels are kept out of every computation
that mixes pixels (PCA) and their output rows are zeros, so that one bad pixel never turns the rest
of an image into NaN.

====  ==================  ===========================================================
code  name                meaning
====  ==================  ===========================================================
0     OK                  usable
1     NONFINITE           NaN or Inf in the raw spectrum, or a dead channel (NaN/Inf in
                          every spectrum, interpolated) inside its model window
2     NEGATIVE_TOTAL      total counts <= 0 (empty or over-subtracted pixel)
3     BACKGROUND_FAILED   power-law fit failed (no positive counts in a half-window)
4     NO_PEAK             no first peak found in the peak search window
5     OUT_OF_RANGE        the model grid around the peak runs past the measured range
6     NO_EDGE             edge counts not significant above the background's Poisson
                          noise (no carbon here)
7     LOW_COUNTS          edge counts below ``min_edge_counts``
====  ==================  ===========================================================
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = ["Reason", "REASON_TEXT", "raw_reasons", "first_reason", "reason_summary",
           "describe_reasons"]


class Reason(IntEnum):
    """Reason codes of masked pixels (see the module table)."""

    OK = 0
    NONFINITE = 1
    NEGATIVE_TOTAL = 2
    BACKGROUND_FAILED = 3
    NO_PEAK = 4
    OUT_OF_RANGE = 5
    NO_EDGE = 6
    LOW_COUNTS = 7


#: One line per code, for reports, tooltips and layer metadata.
REASON_TEXT = {
    Reason.OK: "usable",
    Reason.NONFINITE: "NaN or Inf in the spectrum (or a dead channel in its model window)",
    Reason.NEGATIVE_TOTAL: "total counts <= 0",
    Reason.BACKGROUND_FAILED: "power-law background fit failed",
    Reason.NO_PEAK: "no first peak in the search window",
    Reason.OUT_OF_RANGE: "model grid runs past the measured energy range",
    Reason.NO_EDGE: "no significant edge above the background (no carbon)",
    Reason.LOW_COUNTS: "too few edge counts",
}


def first_reason(*checks):
    """Combine ``(code, failed)`` pairs into one code per pixel: the first failing check wins.

    Parameters
    ----------
    *checks : (Reason, array_like of bool)
        In order of precedence; ``failed`` arrays broadcast to one shape.

    Returns
    -------
    ndarray, uint8

    Examples
    --------
    >>> first_reason((Reason.NONFINITE, [True, False, False]),
    ...              (Reason.LOW_COUNTS, [True, True, False]))
    array([1, 7, 0], dtype=uint8)
    """
    shape = np.broadcast_shapes(*(np.shape(f) for _, f in checks))
    out = np.zeros(shape, dtype=np.uint8)
    for code, failed in reversed(checks):
        out[np.broadcast_to(np.asarray(failed, bool), shape)] = int(code)
    return out


def raw_reasons(counts):
    """Checks on raw counts: NONFINITE and NEGATIVE_TOTAL, plus the total counts.

    Parameters
    ----------
    counts : array_like, shape (..., n)

    Returns
    -------
    reason : ndarray, uint8, shape (...)
    total : ndarray, float64, shape (...)
        Sum over channels (0 where non-finite).

    Examples
    --------
    >>> raw_reasons(np.array([[1.0, 2.0], [np.nan, 1.0], [-3.0, 1.0]]))[0]
    array([0, 1, 2], dtype=uint8)
    """
    y = np.asarray(counts)
    total = y.sum(-1, dtype=np.float64)
    finite = np.isfinite(total)  # any NaN/Inf in a row makes its sum non-finite (or NaN)
    total = np.where(finite, total, 0.0)
    return first_reason((Reason.NONFINITE, ~finite), (Reason.NEGATIVE_TOTAL, total <= 0)), total


def reason_summary(reason):
    """How many pixels carry each code, by name (codes that occur only).

    Examples
    --------
    >>> reason_summary(np.array([0, 0, 7, 1], dtype=np.uint8))
    {'OK': 2, 'NONFINITE': 1, 'LOW_COUNTS': 1}
    """
    codes, counts = np.unique(np.asarray(reason, np.uint8), return_counts=True)
    return {Reason(int(c)).name: int(k) for c, k in zip(codes, counts)}


def describe_reasons(reason, skip_ok=False):
    """Pixel counts per reason in words, e.g. ``'3 x too few edge counts; 1 x usable'``.

    The one wording of mask reasons for users (the widget's notifications, the command line's
    summary and refusals).

    Parameters
    ----------
    reason : array_like of reason codes
    skip_ok : bool
        Leave out the usable pixels (code 0).

    Examples
    --------
    >>> describe_reasons(np.array([0, 7, 7, 6], dtype=np.uint8))
    '1 x usable; 1 x no significant edge above the background (no carbon); 2 x too few edge counts'
    >>> describe_reasons(np.array([0, 7], dtype=np.uint8), skip_ok=True)
    '1 x too few edge counts'
    """
    codes, counts = np.unique(np.asarray(reason).astype(np.uint8).ravel(), return_counts=True)
    parts = []
    for c, n in zip(codes, counts):
        if skip_ok and c == 0:
            continue
        try:
            text = REASON_TEXT[Reason(int(c))]
        except ValueError:
            text = f"reason code {int(c)}"
        parts.append(f"{int(n)} x {text}")
    return "; ".join(parts)
