"""C 1s ionisation energy of one carbon by Delta-SCF: the core-ionised cation (docs/backend.md).

The cation is the excited state of :mod:`corehole` without its excited electron: the same mixed
basis (the site's own core-valence basis), the same localised alpha 1s hole followed by overlap,
the valence relaxed by aufbau around it, the same solver chain and checks (the hole stays on the
carbon, no other 1s is emptied) and the same fine-grid energy pass. The ionisation energy (IP) is
E(cation) - E(ground state) in that basis; with the excitation energy of the same site it places
the site's ionisation threshold, where a measured spectrum turns from bound states into the
continuum (:func:`napari_corefit.backend.curves.site_spectra`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from napari_corefit.backend import corehole
from napari_corefit.backend.corehole import (_core_weight, _fallback_stages, _mom_solve,
                                             _SiteFailure, energy_difference, site_ground_state)
from napari_corefit.backend.fastscf import make_ks
from napari_corefit.backend.groundstate import lowdin_weights
from napari_corefit.backend.occupation import core_hole_occ

__all__ = ["IonisationResult", "compute_ionisation"]


@dataclass
class IonisationResult:
    """One carbon site's core-ionised cation."""

    atom_index: int
    status: str = "ok"
    ionisation_energy: float = np.nan  # eV, E(cation) - E(ground state), same mixed basis
    hole_population: float = np.nan
    seconds: float = 0.0
    cycles: int = 0
    stage: str = ""


def _cation_check(mf, hole, atom, recipe, other_cores):
    """The cation's checks: the hole on the carbon, every other 1s filled (``_SiteFailure``)."""
    s = mf.get_ovlp()
    if other_cores.shape[1]:
        weight = _core_weight(mf, other_cores, s)
        if weight < corehole.MIN_CORE_WEIGHT:
            raise _SiteFailure(f"another atom's 1s lost {1 - weight:.2f} of an electron")
    ca, occ = mf.mo_coeff[0], mf.mo_occ[0]
    empty = np.flatnonzero(occ < 0.5)
    ov = (ca[:, empty].T @ s @ hole) ** 2
    h = int(empty[np.argmax(ov)])
    on_atom = [lab[0] == atom for lab in mf.mol.ao_labels(fmt=False)]
    population = float(lowdin_weights(mf, ca[:, [h]])[on_atom].sum())
    if population < recipe.min_hole_population:
        raise _SiteFailure(f"hole escaped (population {population:.2f} on atom)")
    return population


def compute_ionisation(molecule, atom, recipe, dm_uniform=None, mol_uniform=None):
    """Delta-SCF C 1s ionisation energy of carbon ``atom``.

    Parameters
    ----------
    molecule : Molecule
    atom : int
        Index of the carbon.
    recipe : Recipe
        The database's recipe (basis, functional, grids, solver settings).
    dm_uniform, mol_uniform : optional
        Ground-state density in the uniform basis, the initial guess of the mixed-basis one.

    Returns
    -------
    IonisationResult
        ``status`` is ``"ok"`` or ``"failed: <reason>"``; a failure never raises.

    Examples
    --------
    >>> from napari_corefit.backend import Molecule, Recipe
    >>> r = compute_ionisation(Molecule.from_smiles("C", optimise="mmff"), 0, Recipe())
    >>> 289.5 < r.ionisation_energy < 292.5  # methane, gas-phase XPS 290.8 eV
    True
    """
    t0 = time.perf_counter()
    res = IonisationResult(atom_index=atom)
    site = None
    try:
        site = site_ground_state(molecule, atom, recipe, dm_uniform, mol_uniform)
        gs, c, hole, nocc = site.gs, site.c, site.hole, site.nocc
        occ_b = (gs.mo_occ > 0).astype(np.float64)
        occ_a = occ_b.copy()
        occ_a[hole] = 0.0
        mo0, occ0 = np.array([c, c]), np.array([occ_a, occ_b])
        mf = core_hole_occ(make_ks(site.mol, recipe, unrestricted=True, share=gs), c[:, hole],
                           nocc - 1, nocc)
        mf, stage, cycles, population = _mom_solve(
            mf, mo0, occ0, _fallback_stages(recipe),
            check=lambda m: _cation_check(m, c[:, hole], atom, recipe, site.other_cores))
        res.stage, res.cycles, res.hole_population = stage, cycles, population
        res.ionisation_energy = energy_difference(site, mf, recipe)
        if not np.isfinite(res.ionisation_energy):
            raise _SiteFailure("non-finite energy")
    except _SiteFailure as exc:
        res.status = f"failed: {exc}"
    except Exception as exc:  # noqa: BLE001 - a failed site must never crash a pass
        res.status = f"failed: {type(exc).__name__}: {exc}"
    finally:
        if site is not None:
            site.gs._numint.clear_cache()
    res.seconds = time.perf_counter() - t0
    return res
