"""The per-atom table: one row per column, positions in pixels and nm, counts, features."""

from __future__ import annotations

import numpy as np

__all__ = ["atom_table", "FIRST_COLUMNS"]

#: Columns every table starts with (the CSV contract); feature columns follow.
FIRST_COLUMNS = ["atom", "y_px", "x_px", "y_nm", "x_nm"]


def atom_table(positions, nav, n_pixels, raw_counts, edge_counts, peak_energy, usable, reason,
               features, ood, quality, to_nm):
    """Assemble the per-atom table.

    Parameters
    ----------
    positions : ndarray of ``atoms.find.ATOM_DTYPE``
        Sub-pixel column positions in the SI's pixel grid, and the fit's amplitude, width and
        quality.
    nav : list of dict
        The SI's navigation axes in array order (y, x), with ``offset``, ``scale``, ``units``.
    n_pixels, raw_counts : array_like, shape (n_atoms,)
        Pixels summed per column and their total raw counts (all channels).
    edge_counts, peak_energy, usable, reason : array_like, shape (n_atoms,)
        From preprocessing the summed spectra (edge counts N, first-peak energy in eV, mask,
        reason code).
    features : dict of array_like
        From :func:`napari_corefit.engine.dos_features` (HOMO/LUMO peaks, windows, sigma_rel).
    ood, quality : array_like, shape (n_atoms,)
    to_nm : callable(px, axis_dict) -> ndarray
        Pixel index to nm along one axis (NaN where the axis has no length units).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FIRST_COLUMNS`, then ``amplitude``, ``width_px``, ``fit_quality``,
        ``n_pixels``, ``raw_counts``, ``edge_counts``, ``peak_energy_ev``, ``usable``,
        ``reason``, the features, ``ood``, ``quality``.
    """
    import pandas as pd

    y = np.asarray(positions["y"], dtype=np.float64)
    x = np.asarray(positions["x"], dtype=np.float64)
    cols = {
        "atom": np.arange(y.size),
        "y_px": y,
        "x_px": x,
        "y_nm": to_nm(y, nav[0]),
        "x_nm": to_nm(x, nav[1]),
        "amplitude": positions["amplitude"],
        "width_px": positions["sigma"],
        "fit_quality": positions["quality"],
        "n_pixels": np.asarray(n_pixels),
        "raw_counts": np.asarray(raw_counts, dtype=np.float64),
        "edge_counts": np.asarray(edge_counts, dtype=np.float64),
        "peak_energy_ev": np.asarray(peak_energy, dtype=np.float64),
        "usable": np.asarray(usable, bool),
        "reason": np.asarray(reason),
    }
    cols.update({k: np.asarray(v) for k, v in features.items()})
    cols["ood"] = np.asarray(ood)
    cols["quality"] = np.asarray(quality)
    return pd.DataFrame(cols)
