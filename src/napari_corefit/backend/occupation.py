"""Occupation rules of the core-hole SCF: which orbitals are filled in each cycle.

PySCF asks ``mf.get_occ`` for the occupations after every diagonalisation; each rule here replaces
it on a UKS object. The localised 1s hole is always followed by overlap: it lies ~10 Hartree
below the valence, so the overlap is unambiguous.
"""

from __future__ import annotations

import numpy as np
from pyscf import scf

__all__ = ["core_hole_occ", "excited_electron_occ", "set_occupation"]


def core_hole_occ(mf, hole, n_alpha, n_beta):
    """Set ``mf.get_occ``: alpha hole by overlap, every other electron by aufbau.

    Parameters
    ----------
    mf : pyscf UKS object
    hole : ndarray
        AO coefficients of the localised 1s orbital to keep empty.
    n_alpha, n_beta : int
        Electrons of each spin in the core-hole state.

    In each SCF cycle the alpha orbital with the largest overlap with ``hole`` stays empty and the
    ``n_alpha`` lowest of the others are filled; beta orbitals fill by aufbau. The 1s orbital lies
    ~10 Hartree below the valence, so following it by overlap is unambiguous, while the valence
    relaxes to the lowest state with that hole.
    """
    s = mf.get_ovlp()
    hole_s = hole @ s

    def get_occ(mo_energy=None, mo_coeff=None):
        mo_energy = mf.mo_energy if mo_energy is None else mo_energy
        mo_coeff = mf.mo_coeff if mo_coeff is None else mo_coeff
        occ = np.zeros_like(np.asarray(mo_energy, dtype=np.float64))
        h = int(np.argmax((hole_s @ mo_coeff[0]) ** 2))
        order = [i for i in np.argsort(mo_energy[0], kind="stable") if i != h]
        occ[0, order[:n_alpha]] = 1.0
        occ[1, np.argsort(mo_energy[1], kind="stable")[:n_beta]] = 1.0
        return occ

    mf.get_occ = get_occ
    return mf


def set_occupation(mf, recipe, mo0, occ0, hole):
    """The recipe's occupation rule on a UKS object: ``core_hole_occ`` (recipe 3, aufbau
    valence) or maximum overlap with the initial orbitals ``mo0``/``occ0`` (recipe 2)."""
    if recipe.occupation == "aufbau":
        return core_hole_occ(mf, hole, int(occ0[0].sum()), int(occ0[1].sum()))
    return scf.addons.mom_occ(mf, mo0, occ0)


def excited_electron_occ(mf, hole, excited, n_alpha, n_beta):
    """Set ``mf.get_occ``: alpha hole and excited electron by overlap, the rest by aufbau.

    Parameters
    ----------
    mf : pyscf UKS object
    hole, excited : ndarray
        AO coefficients of the localised 1s orbital to keep empty and of the orbital the excited
        electron is kept in (followed by maximum overlap with it in every cycle).
    n_alpha, n_beta : int
        Electrons of each spin in the core-hole state.

    Used where aufbau has no self-consistent solution (two orbitals that each fall below the
    other once the electron sits in it): each occupation is converged on its own and the
    energies decide (``corehole._descend``).
    """
    s = mf.get_ovlp()
    hole_s, excited_s = hole @ s, excited @ s

    def get_occ(mo_energy=None, mo_coeff=None):
        mo_energy = mf.mo_energy if mo_energy is None else mo_energy
        mo_coeff = mf.mo_coeff if mo_coeff is None else mo_coeff
        occ = np.zeros_like(np.asarray(mo_energy, dtype=np.float64))
        h = int(np.argmax((hole_s @ mo_coeff[0]) ** 2))
        like = (excited_s @ mo_coeff[0]) ** 2
        like[h] = -1.0
        x = int(np.argmax(like))
        order = [i for i in np.argsort(mo_energy[0], kind="stable") if i not in (h, x)]
        occ[0, order[:n_alpha - 1]] = 1.0
        occ[0, x] = 1.0
        occ[1, np.argsort(mo_energy[1], kind="stable")[:n_beta]] = 1.0
        return occ

    mf.get_occ = get_occ
    return mf
