"""Sticks to curves on the SPEC grids (site and molecule level), from a :class:`SiteTable`.

Broadened arrays are always derived from the stored sticks, so a new grid or broadening never
needs a new quantum-chemistry run (SPEC section 4).
"""

from __future__ import annotations

import numpy as np

from napari_corefit.spectra.grids import (BROADENING_EV, DOS_GRID, SPECTRUM_GRID, EnergyGrid,
                                          area_normalise, broaden_ragged, interpolate_rows)

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


def _search(peak_search_ev, peak_params):
    from napari_corefit.spectra.pipeline import PreprocessConfig

    cfg = PreprocessConfig()
    return (cfg.peak_search_ev if peak_search_ev is None else peak_search_ev,
            cfg.peak_params if peak_params is None else peak_params)


def site_spectra(table, grid=SPECTRUM_GRID, sigma=BROADENING_EV, peak_params=None,
                 peak_search_ev=None, return_peaks=False, chunk=2048):
    """Noise-free model inputs: site spectra aligned on their first peak, area-normalised.

    The first peak is found on the absolute energy axis by the engine's own
    :func:`napari_corefit.spectra.align.first_peak`, with the engine's search window and
    detector parameters (defaults of :class:`PreprocessConfig`), so that training aligns exactly
    as inference will (SPEC section 2).

    Returns
    -------
    spectra : ndarray, shape (n_sites, grid.n)
    peaks : ndarray, shape (n_sites,), optional
        First-peak positions relative to each site's E_exc (eV); 0 where none was found.
    """
    from napari_corefit.spectra.align import first_peak

    window, params = _search(peak_search_ev, peak_params)
    e_exc = table.sites["excitation_energy"].astype(np.float64)
    out = np.zeros((table.n_sites, grid.n))
    rel_peaks = np.zeros(table.n_sites)
    for a in range(0, table.n_sites, chunk):
        idx = np.arange(a, min(a + chunk, table.n_sites))
        sub = table.select(np.isin(np.arange(table.n_sites), idx))
        lo = min(np.nanmin(e_exc[idx]) + _FINE.start, window[0] - 2.0)
        hi = max(np.nanmax(e_exc[idx]) + _FINE.stop, window[1] + grid.stop + 2.0)
        # on a lattice of whole fine steps from 0 eV, not from this chunk's lowest E_exc: a
        # site then gets the same samples, peak and input whichever sites share its chunk
        axis = np.arange(np.floor(lo / _FINE.step), np.ceil(hi / _FINE.step)) * _FINE.step
        y = absolute_site_spectra(sub, axis, sigma)
        peaks = first_peak(axis, y, window, params)
        peaks = np.where(np.isnan(peaks), e_exc[idx], peaks)
        out[idx] = interpolate_rows(axis, y, grid.values[None, :] + peaks[:, None])
        rel_peaks[idx] = peaks - e_exc[idx]
    out = area_normalise(out, grid.step)
    return (out, rel_peaks) if return_peaks else out


def _molecule_groups(table):
    mol = table.sites["molecule"]
    ids = np.unique(mol)
    return ids, [np.flatnonzero(mol == m) for m in ids]


def molecule_spectra(table, grid=SPECTRUM_GRID, sigma=BROADENING_EV, peak_params=None,
                     peak_search_ev=None):
    """Multiplicity-weighted molecular spectra, re-referenced to the molecule's first peak.

    The first peak is found as in :func:`site_spectra` (the engine's detector and window).

    Returns
    -------
    molecule_ids : ndarray
    spectra : ndarray, shape (n_molecules, grid.n)
    """
    from napari_corefit.spectra.align import first_peak

    window, params = _search(peak_search_ev, peak_params)
    ids, groups = _molecule_groups(table)
    e_exc = table.sites["excitation_energy"].astype(np.float64)
    mult = table.sites["multiplicity"].astype(np.float64)
    out = np.zeros((ids.size, grid.n))
    for row, idx in enumerate(groups):
        e0 = np.nanmin(e_exc[idx])
        axis = np.arange(min(e0 + _FINE.start, window[0] - 2.0),
                         max(e0 + _FINE.stop, window[1] + grid.stop + 2.0), _FINE.step)
        sub = table.select(np.isin(np.arange(table.n_sites), idx))
        curves = absolute_site_spectra(sub, axis, sigma) * mult[idx, None]
        total = curves.sum(axis=0)
        peak = first_peak(axis, total, window, params)
        peak = e0 if np.isnan(peak) else peak
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
