"""Coulomb-only density fitting from the raw three-centre integrals.

PySCF's in-memory density fitting builds the Cholesky-whitened tensor ``B = L^-1 (P|ij)``
(``cholesky_eri``): a triangular solve over every AO pair that costs more than the integrals
themselves (about 0.2-0.3 CPU-s of a 3-s site on the QM9 molecules of the database;
docs/backend.md). A pure functional (the recipe's PBE) needs only the Coulomb matrix, and

    J_ij = sum_PQ (ij|P) [(P|Q)^-1] (Q|kl) D_kl

needs only the raw integrals and a Cholesky factor of the small metric ``(P|Q)``: per SCF cycle
the same two passes over the integrals as the whitened path, plus one ``naux``-sized solve.
Anything else (exchange, range separation, PySCF's block loop) builds PySCF's own tensor on
first use, so a caller outside the recipe's path gets PySCF's behaviour, only later.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from pyscf import df, lib
from pyscf.df import addons, incore

__all__ = ["CoulombFit"]


class CoulombFit(df.DF):
    """A ``pyscf.df.DF`` whose ``get_jk`` computes J from ``(ij|P)`` and ``chol((P|Q))``.

    Use it as ``mf.with_df`` of a density-fitted KS object with a non-hybrid functional.
    """

    _int3c = None  # (npair, naux): (ij|P) for the packed lower triangle i >= j
    _metric = None  # Cholesky factor of (P|Q), as scipy.linalg.cho_factor returns it

    def build(self):
        self.check_sanity()
        self.auxmol = addons.make_auxmol(self.mol, self.auxbasis)
        j2c = self.auxmol.intor("int2c2e", hermi=1)
        try:
            self._metric = scipy.linalg.cho_factor(j2c, lower=True)
        except scipy.linalg.LinAlgError:
            # a near-singular auxiliary metric: PySCF's tensor, which drops the dependent
            # combinations (its eigenvalue path)
            self._metric = self._int3c = None
            return super().build()
        self._int3c = incore.aux_e2(self.mol, self.auxmol, "int3c2e", aosym="s2ij")
        return self

    def reset(self, mol=None):
        self._int3c = self._metric = None
        return super().reset(mol)

    def _pyscf_tensor(self):
        """PySCF's whitened tensor, built once on the first call that needs it."""
        if self._cderi is None:
            super().build()

    def loop(self, blksize=None):
        self._pyscf_tensor()
        return super().loop(blksize)

    def get_naoaux(self):
        if self._int3c is not None:
            return self._int3c.shape[1]
        return super().get_naoaux()

    def get_jk(self, dm, hermi=1, with_j=True, with_k=True, direct_scf_tol=1e-13, omega=None):
        if self._int3c is None and self._cderi is None:
            self.build()
        if with_k or omega is not None or self._int3c is None:
            self._pyscf_tensor()
            return super().get_jk(dm, hermi, with_j, with_k, direct_scf_tol, omega)
        if not with_j:
            return None, None
        return self.get_j(dm), None

    def get_j(self, dm):
        """Coulomb matrix of ``dm``, shape ``(..., nao, nao)`` (any leading dimensions)."""
        dm = np.asarray(dm)
        nao = dm.shape[-1]
        dms = dm.reshape(-1, nao, nao)
        # (ij|kl) is symmetric in k, l: only the symmetric part of D contributes; packed with
        # the off-diagonal elements counted twice
        tril = lib.pack_tril(dms + dms.transpose(0, 2, 1))
        diag = np.arange(nao)
        tril[:, diag * (diag + 1) // 2 + diag] *= 0.5
        rho = tril @ self._int3c  # (nset, naux): (P|rho)
        coef = scipy.linalg.cho_solve(self._metric, rho.T)  # (naux, nset)
        vj = lib.unpack_tril(np.ascontiguousarray((self._int3c @ coef).T))
        return vj.reshape(dm.shape)
