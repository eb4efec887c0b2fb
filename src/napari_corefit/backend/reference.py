"""The straightforward PySCF script, kept as the baseline that the fast path is measured against.

This is what a careful user would write from the PySCF documentation: density fitting, default
grids (level 3), default convergence, a fresh SCF object for every state and nothing shared. The
benchmark (benchmarks/bench_backend.py) and the tests compare energies, spectra and DOS of the
project's path with it in the same run.
"""

from __future__ import annotations

import time

import numpy as np
from pyscf import dft

from napari_corefit.backend.corehole import localise_core_hole, set_occupation
from napari_corefit.backend.groundstate import build_mol
from napari_corefit.backend.recipe import HARTREE_EV

__all__ = ["reference_excitation"]


def reference_excitation(molecule, atom, recipe, conv_tol=1e-7, max_cycle=100):
    """Plain Delta-SCF first-transition energy (eV) of carbon ``atom`` and seconds taken.

    Returns
    -------
    energy : float
        NaN when an SCF does not converge (an unconverged energy is not data).
    seconds : float
    spectrum : tuple of ndarray
        Stick energies (eV relative to the first transition) and orientation-averaged
        intensities, from the converged state's alpha orbitals.
    """
    t0 = time.perf_counter()
    mol = build_mol(molecule, recipe, excited=atom)
    gs = dft.RKS(mol).density_fit()
    gs.xc = recipe.functional
    gs.conv_tol = conv_tol
    gs.max_cycle = max_cycle
    gs.verbose = 0
    gs.kernel()
    c, hole, _ = localise_core_hole(gs, atom)
    nocc = int(np.count_nonzero(gs.mo_occ > 0))
    occ_a = (gs.mo_occ > 0).astype(float)
    occ_b = occ_a.copy()
    occ_a[hole], occ_a[nocc] = 0.0, 1.0
    ex = dft.UKS(mol).density_fit()
    ex.xc = recipe.functional
    ex.conv_tol = conv_tol
    ex.max_cycle = max_cycle
    ex.verbose = 0
    # the recipe's occupation rule (a physics choice, not a speed one): the same in both paths
    ex = set_occupation(ex, recipe, np.array([c, c]), np.array([occ_a, occ_b]), c[:, hole])
    ex.kernel(dm0=ex.make_rdm1(np.array([c, c]), np.array([occ_a, occ_b])))
    ok = gs.converged and ex.converged
    energy = (ex.e_tot - gs.e_tot) * HARTREE_EV if ok else np.nan
    s = ex.get_ovlp()
    ca, occ, eps = ex.mo_coeff[0], ex.mo_occ[0], ex.mo_energy[0]
    h = int(np.argmax(np.where(occ == 0, (ca.T @ s @ c[:, hole]) ** 2, -1)))
    if recipe.occupation == "aufbau":
        x = int(np.argmax(np.where(occ > 0, eps, -np.inf)))  # the highest occupied alpha
    else:
        x = int(np.argmax(np.where(occ > 0, (ca.T @ s @ c[:, nocc]) ** 2, -1)))
    finals = np.array([x] + [v for v in np.flatnonzero(occ == 0) if v != h and eps[v] >= eps[x]])
    r = mol.intor_symmetric("int1e_r")
    dip = np.einsum("kab,a,bv->vk", r, ca[:, h], ca[:, finals])
    sticks = ((eps[finals] - eps[x]) * HARTREE_EV, (dip ** 2).mean(axis=1))
    return energy, time.perf_counter() - t0, sticks
