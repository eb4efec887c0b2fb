"""Sticks to curves on the SPEC grids (site and molecule level), from a :class:`SiteTable`.

Broadened arrays are always derived from the stored sticks, so a new grid or broadening never
needs a new quantum-chemistry run (SPEC section 4).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import erf

from napari_corefit.spectra.grids import (BROADENING_EV, DOS_GRID, SPECTRUM_GRID, EnergyGrid,
                                          area_normalise, broaden_ragged, interpolate_rows)

__all__ = ["Continuum", "CONTINUUM", "DISCRETE", "site_dos", "absolute_site_spectra",
           "relative_site_spectra", "site_spectra", "molecule_spectra", "molecule_dos",
           "ionisation_energies"]

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


@dataclass(frozen=True)
class Continuum:
    """The few global parameters that turn stick spectra into measured-looking ones.

    Below a site's C 1s ionisation energy (IP) every final state is a bound state, broadened by
    the instrument-matched ``sigma`` of the model grid (0.5 eV). Near and above it the finite
    basis's discrete virtual orbitals stand for the continuum: their Gaussian width grows from
    ``sigma`` at ``IP + onset_ev`` to ``sigma_max_ev`` at ``IP + onset_ev + ramp_ev`` (an extra
    width added in quadrature, rising linearly; constant beyond: the energy-dependent widths of
    NEXAFS simulations), and the lines above the IP are scaled by ``damping``. An ionisation
    step, an error function of standard deviation ``step_width_ev`` centred on the IP,
    ``step_height`` times the height of the site's strongest bound-state peak, adds the
    continuum's smooth oscillator strength. Every line keeps its area whatever its width.

    The values of :data:`CONTINUUM` were fitted on ten measured gas-phase spectra (molecular
    sums; ``benchmarks/bench_measured.py --fit``, docs/backend.md "Spectra with a continuum").
    """

    step_height: float = 0.29
    step_width_ev: float = 0.75
    sigma_max_ev: float = 6.0
    ramp_ev: float = 9.34
    onset_ev: float = -1.97
    damping: float = 0.55
    #: threshold of a site without a stored IP: E_exc + this (eV; the first final state's median
    #: term value: 3.9 eV over data/db's Delta-SCF sites, 3.7 eV with its estimates)
    fallback_term_ev: float = 3.8

    def as_dict(self):
        return asdict(self)


#: the realistic recipe, used by default everywhere (training, benchmarks, sample data)
CONTINUUM = Continuum()
#: the discrete-line curves of the first databases (every stick with the grid's width, no step)
DISCRETE = None


def ionisation_energies(table, continuum=CONTINUUM, warn=True):
    """Each site's IP (eV): the stored one, or ``E_exc + continuum.fallback_term_ev`` where the
    database has none (with a warning naming how many: ``corefit db ionise`` adds them)."""
    e_exc = table.sites["excitation_energy"].astype(np.float64)
    ip = np.asarray(table.sites.get("ionisation_energy", np.full(e_exc.size, np.nan)),
                    dtype=np.float64)
    missing = ~np.isfinite(ip) & np.isfinite(e_exc)
    if missing.any():
        if warn:
            warnings.warn(f"{int(missing.sum())} of {e_exc.size} sites have no ionisation energy "
                          f"(`corefit db ionise` adds them); their threshold is placed "
                          f"{continuum.fallback_term_ev:g} eV above the first transition",
                          stacklevel=3)
        ip = np.where(missing, e_exc + continuum.fallback_term_ev, ip)
    return ip


def absolute_site_spectra(table, energies, sigma=BROADENING_EV, continuum=CONTINUUM, ip=None):
    """Broadened site spectra at absolute energy loss (each site at its own E_exc).

    With a :class:`Continuum` (default :data:`CONTINUUM`), each site gets its ionisation step and
    energy-dependent widths about its IP (``ip``, eV, one per site; default
    :func:`ionisation_energies`); ``continuum=DISCRETE`` gives the discrete lines.
    """
    energies = np.asarray(energies, dtype=np.float64)
    e_exc = table.sites["excitation_energy"].astype(np.float64)
    if continuum is None:
        return broaden_ragged(table.spec_offsets, table.spec_energy, table.spec_intensity,
                              energies, sigma, shifts=-e_exc)
    c = continuum
    ip = ionisation_energies(table, c) if ip is None else np.asarray(ip, dtype=np.float64)
    counts = np.diff(table.spec_offsets)
    row = np.repeat(np.arange(counts.size), counts)
    above = table.spec_energy.astype(np.float64) - (ip - e_exc)[row]  # stick - IP
    ramp = np.clip((above - c.onset_ev) / max(c.ramp_ev, 1e-9), 0.0, 1.0)
    # the continuum's extra width adds in quadrature to the Gaussian ``sigma``: a spectrum
    # broadened by part of the model's width here and by an instrument for the rest (the sample
    # generator) equals one broadened by all of it
    extra = np.sqrt(max(c.sigma_max_ev ** 2 - BROADENING_EV ** 2, 0.0)) * ramp
    widths = np.sqrt(sigma ** 2 + extra ** 2)
    weights = np.where(above > 0, c.damping, 1.0) * table.spec_intensity
    y = broaden_ragged(table.spec_offsets, table.spec_energy, weights, energies, widths,
                       shifts=-e_exc)
    if c.step_height:
        # the step's height: the strongest bound-state peak at the model's width (the whole
        # curve where no final state lies below the IP), whatever ``sigma`` this call uses
        bound = np.where(above <= 0, weights, 0.0)
        y_bound = broaden_ragged(table.spec_offsets, table.spec_energy, bound, energies,
                                 BROADENING_EV, shifts=-e_exc)
        if not (bound > 0).all():
            y_all = broaden_ragged(table.spec_offsets, table.spec_energy, weights, energies,
                                   np.sqrt(BROADENING_EV ** 2 + extra ** 2), shifts=-e_exc)
            y_bound = np.where(y_bound.max(axis=1, keepdims=True) > 0, y_bound, y_all)
        peak = y_bound.max(axis=1)
        width = np.sqrt(max(c.step_width_ev ** 2 - (BROADENING_EV ** 2 - sigma ** 2), 1e-6))
        z = (energies[None, :] - ip[:, None]) / (np.sqrt(2.0) * width)
        y = y + c.step_height * peak[:, None] * 0.5 * (1.0 + erf(z))
    return y


def _search(peak_search_ev, peak_params):
    from napari_corefit.spectra.pipeline import PreprocessConfig

    cfg = PreprocessConfig()
    return (cfg.peak_search_ev if peak_search_ev is None else peak_search_ev,
            cfg.peak_params if peak_params is None else peak_params)


def site_spectra(table, grid=SPECTRUM_GRID, sigma=BROADENING_EV, peak_params=None,
                 peak_search_ev=None, return_peaks=False, chunk=2048, continuum=CONTINUUM):
    """Noise-free model inputs: site spectra aligned on their first peak, area-normalised.

    ``continuum`` (default :data:`CONTINUUM`) gives each site its ionisation step and continuum
    widths (:class:`Continuum`); ``continuum=DISCRETE`` (None) the discrete-line curves.

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
    ip = None if continuum is None else ionisation_energies(table, continuum)
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
        y = absolute_site_spectra(sub, axis, sigma, continuum,
                                  None if ip is None else ip[idx])
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
                     peak_search_ev=None, continuum=CONTINUUM, return_peaks=False):
    """Multiplicity-weighted molecular spectra, re-referenced to the molecule's first peak.

    The first peak is found as in :func:`site_spectra` (the engine's detector and window); each
    site carries its own continuum about its own IP (``continuum``, as in :func:`site_spectra`).

    Returns
    -------
    molecule_ids : ndarray
    spectra : ndarray, shape (n_molecules, grid.n)
    peaks : ndarray, shape (n_molecules,), optional
        Absolute first-peak positions (eV).
    """
    from napari_corefit.spectra.align import first_peak

    window, params = _search(peak_search_ev, peak_params)
    ids, groups = _molecule_groups(table)
    e_exc = table.sites["excitation_energy"].astype(np.float64)
    mult = table.sites["multiplicity"].astype(np.float64)
    ip = None if continuum is None else ionisation_energies(table, continuum)
    out = np.zeros((ids.size, grid.n))
    peaks = np.zeros(ids.size)
    for row, idx in enumerate(groups):
        e0 = np.nanmin(e_exc[idx])
        axis = np.arange(min(e0 + _FINE.start, window[0] - 2.0),
                         max(e0 + _FINE.stop, window[1] + grid.stop + 2.0), _FINE.step)
        sub = table.select(np.isin(np.arange(table.n_sites), idx))
        curves = absolute_site_spectra(sub, axis, sigma, continuum,
                                       None if ip is None else ip[idx]) * mult[idx, None]
        total = curves.sum(axis=0)
        peak = first_peak(axis, total, window, params)
        peak = e0 if np.isnan(peak) else peak
        out[row] = interpolate_rows(axis, total[None], grid.values + peak)[0]
        peaks[row] = peak
    out = area_normalise(out, grid.step)
    return (ids, out, peaks) if return_peaks else (ids, out)


def molecule_dos(table, grid=DOS_GRID, sigma=BROADENING_EV):
    """Multiplicity-weighted sum of site DOS per molecule, (n_molecules, 2, n) normalised."""
    ids, groups = _molecule_groups(table)
    per_site = site_dos(table, grid, sigma)
    mult = table.sites["multiplicity"].astype(np.float64)
    out = np.stack([(per_site[idx] * mult[idx, None, None]).sum(0) for idx in groups]) \
        if groups else np.zeros((0, 2, grid.n))
    return ids, area_normalise(out, grid.step)
