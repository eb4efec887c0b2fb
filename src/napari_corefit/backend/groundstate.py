"""Ground state of a molecule in the uniform basis and its carbon site DOS (SPEC section 1.2, 1.6).

The site DOS of carbon i is, for every molecular orbital, its Loewdin population on atom i split
into 1s core, valence s, p and d, with the orbital's energy and occupation. Loewdin populations of
one orbital sum to 1 over atoms and shells, so the occupied weights times the occupations sum to
the atom's Loewdin electron count.
"""

from __future__ import annotations

import numpy as np
from pyscf import gto

from napari_corefit.backend.fastscf import make_ks
from napari_corefit.backend.recipe import HARTREE_EV

__all__ = ["build_mol", "run_ground_state", "shell_masks", "overlap_sqrt", "lowdin_weights",
           "site_dos_sticks", "fermi_level"]


def build_mol(molecule, recipe, excited=None):
    """PySCF molecule; ``excited`` (atom index) gets the recipe's core basis (label ``C@1``)."""
    labels = {} if excited is None else {excited: f"{molecule.symbols[excited]}@1"}
    basis = {"default": recipe.basis}
    if excited is not None:
        basis[labels[excited]] = core_basis(recipe.core_basis, molecule.symbols[excited])
    mol = gto.M(atom=molecule.pyscf_atoms(labels), basis=basis, unit="Angstrom", charge=0,
                spin=0, verbose=0)
    return mol


def core_basis(name, symbol):
    """The excited atom's basis; ``"NAME+diffuse"`` adds aug-cc-pVDZ's diffuse shells to NAME.

    (PySCF has no aug-cc-pCVDZ; the diffuse s, p, d shells of aug-cc-pVDZ are what the "aug-"
    prefix adds.)
    """
    if not name.endswith("+diffuse"):
        return name
    base = gto.basis.load(name[: -len("+diffuse")], symbol)
    aug = gto.basis.load("aug-cc-pVDZ", symbol)
    plain = gto.basis.load("cc-pVDZ", symbol)
    return base + [shell for shell in aug if shell not in plain]


def run_ground_state(mol, recipe, dm0=None):
    """Converged RKS ground state (raises ``RuntimeError`` if it does not converge)."""
    mf = make_ks(mol, recipe)
    mf.kernel(dm0=dm0)
    if not mf.converged:
        mf.level_shift = 0.2
        mf.max_cycle = 3 * recipe.max_cycle
        mf.kernel(dm0=mf.make_rdm1())
    if not mf.converged:
        raise RuntimeError("ground-state SCF did not converge")
    return mf


def shell_masks(mol, atom):
    """Boolean masks over AOs of ``atom``: 1s core, valence s, p, d (and higher)."""
    labels = mol.ao_labels(fmt=False)
    on_atom = np.array([lab[0] == atom for lab in labels])
    shell = [lab[2] for lab in labels]  # e.g. '1s', '2s', '2p', '3d'
    ang = np.array([s[-1] for s in shell])
    # the first contracted s function of a first-row atom is its 1s core
    core = np.array([s == "1s" for s in shell])
    return {
        "core": on_atom & core,
        "s": on_atom & (ang == "s") & ~core,
        "p": on_atom & (ang == "p"),
        "d": on_atom & ~np.isin(ang, ["s", "p"]),
    }


def overlap_sqrt(mf):
    """S^1/2 of the AO overlap (Loewdin's orthogonalisation), by eigh: S is symmetric positive
    definite."""
    evals, evecs = np.linalg.eigh(mf.get_ovlp())
    return (evecs * np.sqrt(evals)) @ evecs.T


def lowdin_weights(mf, mo_coeff=None):
    """Squared Loewdin coefficients, shape (nao, nmo): column j sums to 1."""
    c = mf.mo_coeff if mo_coeff is None else mo_coeff
    return (overlap_sqrt(mf) @ c) ** 2


def fermi_level(mo_energy, mo_occ):
    """Midpoint of HOMO and LUMO (Hartree)."""
    homo = mo_energy[mo_occ > 0].max()
    lumo = mo_energy[mo_occ == 0].min()
    return 0.5 * (homo + lumo)


def site_dos_sticks(mf, atom, weights=None):
    """All orbitals' weights on ``atom`` (no window, no threshold).

    Returns
    -------
    dict with ``energy`` (eV, absolute), ``occupation``, ``core``, ``s``, ``p``, ``d`` (per
    orbital), ``fermi_ev`` and ``core_1s_ev`` (energy of the orbital with most 1s-core weight
    on the atom).
    """
    w = lowdin_weights(mf) if weights is None else weights
    masks = shell_masks(mf.mol, atom)
    out = {k: w[m].sum(axis=0) for k, m in masks.items()}
    out["energy"] = mf.mo_energy * HARTREE_EV
    out["occupation"] = np.asarray(mf.mo_occ, dtype=np.float64)
    out["fermi_ev"] = fermi_level(mf.mo_energy, mf.mo_occ) * HARTREE_EV
    out["core_1s_ev"] = float(out["energy"][np.argmax(out["core"])])
    return out
