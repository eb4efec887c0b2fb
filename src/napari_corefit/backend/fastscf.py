"""What makes the project's SCF faster than a plain PySCF script, each piece measured
(docs/backend.md):

* density fitting with the three-centre integrals built once and kept in memory: PySCF's
  J-only density-fitting path recomputes them every cycle when they are not initialised;
  for a pure functional the raw integrals and the Cholesky factor of the metric, without
  PySCF's whitening solve over every AO pair (:class:`~.coulomb.CoulombFit`);
* AO values (and gradients) on the integration grid computed once per molecule and basis and
  reused in every SCF cycle of the ground state and of the core-hole state (about a third of the
  exchange-correlation time otherwise);
* one integration grid, density-fitting object and AO cache shared by the mixed-basis ground
  state and the core-hole state of the same site; the grid points themselves depend only on
  the atoms, so every site of a molecule reuses them (:func:`make_grids`);
* SCFs on a coarse grid, then the XC energies of both converged densities re-integrated on a
  fine grid in one pass (:func:`xc_energies`; the recipe's ``energy_grid_level``).
"""

from __future__ import annotations

import copy

import numpy as np
from pyscf import dft

from napari_corefit.backend.coulomb import CoulombFit

__all__ = ["CachingNumInt", "make_ks", "make_grids", "xc_energy", "xc_energies"]

#: AO caches above this many bytes are not kept (the loop then recomputes, as PySCF does)
MAX_CACHE_BYTES = 2_000_000_000
#: grid points per block of a one-pass (non-cached) integration: the AO buffer stays a few MB
FINE_BLOCK = 56 * 32


class CachingNumInt(dft.numint.NumInt):
    """NumInt whose ``block_loop`` keeps the AO values of each grid block after the first pass."""

    def __init__(self):
        super().__init__()
        self._ao_cache = {}

    def block_loop(self, mol, grids, nao=None, deriv=0, max_memory=2000, non0tab=None,
                   blksize=None, buf=None):
        if grids.coords is None:
            grids.build(with_non0tab=True)
        key = (id(mol), id(grids), deriv, grids.coords.shape[0], nao, blksize)
        cached = self._ao_cache.get(key)
        if cached is not None:
            yield from cached
            return
        nao_ = nao or mol.nao
        comp = (deriv + 1) * (deriv + 2) * (deriv + 3) // 6
        size = comp * nao_ * grids.coords.shape[0] * 8
        if size > MAX_CACHE_BYTES:
            yield from super().block_loop(mol, grids, nao, deriv, max_memory, non0tab, blksize,
                                          buf)
            return
        # one block for the whole grid, in a buffer of its own: the values can be kept as
        # they are (PySCF's loop reuses one buffer for every block, so a cache of several
        # blocks would need a copy of each; measured ~0.1 CPU-s per site, docs/backend.md)
        one_block = -(-grids.coords.shape[0] // dft.numint.BLKSIZE) * dft.numint.BLKSIZE
        blocks = []
        for block in super().block_loop(mol, grids, nao, deriv, max_memory, non0tab,
                                        one_block, None):
            blocks.append(block)
            yield block
        self._ao_cache[key] = blocks

    def clear_cache(self):
        self._ao_cache.clear()


def make_ks(mol, recipe, unrestricted=False, share=None):
    """A Kohn-Sham object set up by the recipe, optionally sharing grids, DF and AO cache.

    Parameters
    ----------
    mol : pyscf.gto.Mole
    recipe : Recipe
    unrestricted : bool
        UKS (core-hole state) instead of RKS.
    share : pyscf KS object, optional
        A KS object of the *same* ``mol`` whose grids, density-fitting integrals and AO cache
        are reused.
    """
    mf = dft.UKS(mol) if unrestricted else dft.RKS(mol)
    mf.xc = recipe.functional
    mf.conv_tol = recipe.conv_tol
    mf.max_cycle = recipe.max_cycle
    mf.verbose = 0
    if recipe.density_fit:
        mf = mf.density_fit(auxbasis=recipe.auxbasis)
        if share is None and not _needs_exchange(mf):
            mf.with_df = CoulombFit(mol, auxbasis=recipe.auxbasis)
    if share is not None:
        mf.grids = share.grids
        mf._numint = share._numint
        if recipe.density_fit:
            mf.with_df = share.with_df
    else:
        mf.grids = make_grids(mol, recipe.grid_level)
        mf._numint = CachingNumInt()
        if recipe.density_fit:
            mf.with_df.build()  # three-centre integrals in memory (see module docstring)
    return mf


def _needs_exchange(mf):
    omega, alpha, hyb = mf._numint.rsh_and_hybrid_coeff(mf.xc, spin=mf.mol.spin)
    return bool(omega or alpha or hyb)


def xc_energy(mf, dm, grids):
    """Exchange-correlation energy of density matrix ``dm`` integrated on ``grids`` (no potential).

    Only the density is evaluated, about half the cost of an SCF cycle's XC step. The AO values
    come through ``mf._numint`` (cached when it is a :class:`CachingNumInt`).
    """
    return xc_energies(mf, [dm], grids, numint=mf._numint)[0]


def xc_energies(mf, dms, grids, numint=None, blksize=FINE_BLOCK):
    """Exchange-correlation energies of several density matrices on one grid, in one pass.

    The AO values of each grid block are evaluated once and used for every density matrix, in
    a small reused buffer: on a fine grid that is only needed once per state, this costs about a
    third of evaluating (and caching) the AO values for each state separately
    (docs/backend.md).

    Parameters
    ----------
    mf : pyscf KS object
        Gives the molecule and the functional.
    dms : list of ndarray
        Each ``(nao, nao)`` (closed shell) or ``(2, nao, nao)`` (alpha, beta).
    grids : pyscf.dft.gen_grid.Grids
    numint : NumInt, optional
        Default: a plain (non-caching) ``NumInt`` with blocks of ``blksize`` points.

    Returns
    -------
    list of float
        Hartree, in the order of ``dms``.
    """
    mol = mf.mol
    ni = numint if numint is not None else dft.numint.NumInt()
    if grids.coords is None:
        grids.build(with_non0tab=True)
    xctype = ni._xc_type(mf.xc)
    deriv = 0 if xctype == "LDA" else 1
    dms = [np.asarray(d) for d in dms]
    totals = [0.0] * len(dms)
    loop_kw = {} if numint is not None else {"blksize": blksize}
    for ao, mask, weight, _ in ni.block_loop(mol, grids, mol.nao, deriv, **loop_kw):
        for k, dm in enumerate(dms):
            spin = 1 if dm.ndim == 3 else 0
            rho = [ni.eval_rho(mol, ao, d, mask, xctype, hermi=1)
                   for d in (dm if spin else dm[None])]
            rho = tuple(rho) if spin else rho[0]
            exc = ni.eval_xc_eff(mf.xc, rho, deriv=0, xctype=xctype, spin=spin)[0]
            den = sum(r[0] if xctype != "LDA" else r for r in (rho if spin else (rho,)))
            totals[k] += float(np.dot(den * weight, exc))
    return totals


def make_grids(mol, level):
    """Integration grid of PySCF ``level`` for ``mol``, its points reused across basis sets.

    Points and weights depend only on the atoms (elements and positions), not on the basis:
    the sites of one molecule (each with its own basis on the excited carbon) share them and
    only the basis-dependent screening mask is made again (about 0.1 CPU-s per site saved on
    the database's molecules; docs/backend.md).
    """
    key = (level, mol.atom_charges().tobytes(), mol.atom_coords().tobytes())
    points = _GRID_POINTS.get(key)
    if points is None:
        points = dft.gen_grid.Grids(mol)
        points.level = level
        points.build(with_non0tab=False)
        if len(_GRID_POINTS) >= 4:
            _GRID_POINTS.pop(next(iter(_GRID_POINTS)))
        _GRID_POINTS[key] = points
    g = copy.copy(points)
    g.mol = mol
    g.non0tab = g.screen_index = g.make_mask(mol, g.coords)
    return g


#: grids (points and weights only) of the last few molecules, by level, charges and positions
_GRID_POINTS: dict = {}
