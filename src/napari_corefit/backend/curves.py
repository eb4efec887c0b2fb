"""Sticks to curves on the SPEC grids (site and molecule level), from a :class:`SiteTable`.

Broadened arrays are always derived from the stored sticks, so a new grid or broadening never
needs a new quantum-chemistry run (SPEC section 4).
"""

from __future__ import annotations

import numpy as np

from napari_corefit.spectra.grids import (BROADENING_EV, DOS_GRID, SPECTRUM_GRID, EnergyGrid,
                                          area_normalise, broaden_ragged, interpolate_rows)
from napari_corefit.spectra.peaks import PEAK_DEFAULTS, find_first_peak

__all__ = ["site_dos", "absolute_site_spectra", "relative_site_spectra", "site_spectra",
           "molecule_spectra", "molecule_dos"]

#: fine grid (eV relative to E_exc) on which sticks are broadened before peak detection
_FINE = EnergyGrid(-4.0, 0.02, 1300)


def site_dos(table, grid=DOS_GRID, sigma=BROADENING_EV, weights="sp"):
    """Occupied and unoccupied site DOS, each area-normalised over the grid.

    Returns
    -------
    ndarray, shape (n_sites, 2, grid.n)
        Channel 0 occupied, 1 unoccupied; energies relative to E_F.
    """
    w = table.dos_sp if weights == "sp" else getattr(table, f"dos_{weights}")
    occ = table.dos_occupied
    out = []
    for part in (occ, ~occ):
        out.append(broaden_ragged(table.dos_offsets, table.dos_energy, np.where(part, w, 0.0),
                                  grid.values, sigma))
    return area_normalise(np.stack(out, axis=1), grid.step)


def relative_site_spectra(table, energies=None, sigma=BROADENING_EV):
    """Broadened site spectra on energies relative to each site's E_exc (not normalised)."""
    energies = _FINE.values if energies is None else np.asarray(energies)
    return broaden_ragged(table.spec_offsets, table.spec_energy, table.spec_intensity,
                          energies, sigma)


def absolute_site_spectra(table, energies, sigma=BROADENING_EV):
    """Broadened site spectra at absolute energy loss (each site at its own E_exc)."""
    energies = np.asarray(energies, dtype=np.float64)
    return broaden_ragged(table.spec_offsets, table.spec_energy, table.spec_intensity, energies,
                          sigma, shifts=-table.sites["excitation_energy"].astype(np.float64))


def site_spectra(table, grid=SPECTRUM_GRID, sigma=BROADENING_EV, peak_params=None,
                 return_peaks=False):
    """Noise-free model inputs: site spectra aligned on their first peak, area-normalised.

    The first peak is found by :func:`find_first_peak` on the broadened spectrum, exactly as the
    engine finds it on measured data (SPEC section 2).
    """
    fine = relative_site_spectra(table, _FINE.values, sigma)
    peaks = find_first_peak(_FINE.values, fine, **(peak_params or PEAK_DEFAULTS))
    peaks = np.nan_to_num(peaks, nan=0.0)
    y = interpolate_rows(_FINE.values, fine, grid.values[None, :] + peaks[:, None])
    y = area_normalise(y, grid.step)
    return (y, peaks) if return_peaks else y


def _molecule_groups(table):
    mol = table.sites["molecule"]
    ids = np.unique(mol)
    return ids, [np.flatnonzero(mol == m) for m in ids]


def molecule_spectra(table, grid=SPECTRUM_GRID, sigma=BROADENING_EV, peak_params=None):
    """Multiplicity-weighted molecular spectra, re-referenced to the molecule's first peak.

    Returns
    -------
    molecule_ids : ndarray
    spectra : ndarray, shape (n_molecules, grid.n)
    """
    ids, groups = _molecule_groups(table)
    e_exc = table.sites["excitation_energy"].astype(np.float64)
    mult = table.sites["multiplicity"].astype(np.float64)
    out = np.zeros((ids.size, grid.n))
    for row, idx in enumerate(groups):
        e0 = np.nanmin(e_exc[idx])
        axis = e0 + _FINE.values
        sub = table.select(np.isin(np.arange(table.n_sites), idx))
        curves = absolute_site_spectra(sub, axis, sigma) * mult[idx, None]
        total = curves.sum(axis=0)
        peak = find_first_peak(axis, total, **(peak_params or PEAK_DEFAULTS))
        peak = axis[0] if np.isnan(peak) else peak
        out[row] = interpolate_rows(axis, total[None], grid.values + peak)[0]
    return ids, area_normalise(out, grid.step)


def molecule_dos(table, grid=DOS_GRID, sigma=BROADENING_EV):
    """Multiplicity-weighted sum of site DOS per molecule, (n_molecules, 2, n) normalised."""
    ids, groups = _molecule_groups(table)
    per_site = site_dos(table, grid, sigma)
    mult = table.sites["multiplicity"].astype(np.float64)
    out = np.stack([(per_site[idx] * mult[idx, None, None]).sum(0) for idx in groups]) \
        if groups else np.zeros((0, 2, grid.n))
    return ids, area_normalise(out, grid.step)
