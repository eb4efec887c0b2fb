"""The speed pieces of the SCF path give PySCF's own numbers (real integrals, small molecules)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyscf")

from pyscf import dft  # noqa: E402

from napari_corefit.backend import Molecule, Recipe  # noqa: E402
from napari_corefit.backend.coulomb import CoulombFit  # noqa: E402
from napari_corefit.backend.fastscf import make_grids, make_ks  # noqa: E402
from napari_corefit.backend.groundstate import build_mol  # noqa: E402


def _methanol_mol(excited=None):
    symbols = ["C", "O", "H", "H", "H", "H"]
    coords = np.array([[0.000, 0.000, 0.000], [1.420, 0.000, 0.000], [-0.360, 1.030, 0.000],
                       [-0.360, -0.510, 0.890], [-0.360, -0.510, -0.890],
                       [1.740, 0.900, 0.000]])
    mol = Molecule(key="test:methanol", name="methanol", symbols=symbols, coords=coords,
                   source="test")
    return build_mol(mol, Recipe(), excited=excited)


def test_coulomb_fit_equals_pyscf_density_fitting():
    mol = _methanol_mol(excited=0)  # the mixed basis of a site: core-valence basis on C0
    ref = dft.RKS(mol).density_fit()
    ref.with_df.build()
    fit = CoulombFit(mol).build()
    rng = np.random.default_rng(0)
    dm = rng.normal(size=(2, mol.nao, mol.nao))
    dm = dm + dm.transpose(0, 2, 1)
    vj_ref = ref.with_df.get_jk(dm, with_k=False)[0]
    vj, vk = fit.get_jk(dm, with_k=False)
    assert vk is None
    assert vj.shape == dm.shape
    np.testing.assert_allclose(vj, vj_ref, atol=1e-10 * abs(vj_ref).max())
    # a non-symmetric density: J sees only its symmetric part, as in PySCF
    d1 = dm[0] + rng.normal(size=dm[0].shape)
    np.testing.assert_allclose(fit.get_jk(d1, hermi=0, with_k=False)[0],
                               ref.with_df.get_jk(d1, hermi=0, with_k=False)[0], atol=1e-9)
    # exchange is not what the fit is for: PySCF's own tensor answers it
    vk = fit.get_jk(dm[0], with_k=True)[1]
    np.testing.assert_allclose(vk, ref.with_df.get_jk(dm[0], with_k=True)[1], atol=1e-10)


def test_ks_energy_with_coulomb_fit_equals_pyscf():
    mol = _methanol_mol()
    recipe = Recipe()
    ours = make_ks(mol, recipe)
    assert isinstance(ours.with_df, CoulombFit)
    ours.kernel()
    ref = dft.RKS(mol).density_fit()
    ref.xc, ref.conv_tol, ref.verbose = recipe.functional, recipe.conv_tol, 0
    ref.grids = make_grids(mol, recipe.grid_level)
    ref.kernel()
    assert ours.converged and ref.converged
    assert abs(ours.e_tot - ref.e_tot) < 1e-7
    # the AO values were kept after the first cycle, and the kept values give PySCF's numbers
    assert ours._numint._ao_cache
    dm = ours.make_rdm1()
    n, exc, vxc = ours._numint.nr_rks(mol, ours.grids, ours.xc, dm)
    n_ref, exc_ref, vxc_ref = dft.numint.NumInt().nr_rks(mol, ours.grids, ours.xc, dm)
    assert exc == pytest.approx(exc_ref, abs=1e-10)
    np.testing.assert_allclose(vxc, vxc_ref, atol=1e-10)


def test_hybrid_functional_keeps_pyscf_density_fitting():
    mol = _methanol_mol()
    from dataclasses import replace

    mf = make_ks(mol, replace(Recipe(), functional="B3LYP"))
    assert not isinstance(mf.with_df, CoulombFit)


def test_shared_grid_points_equal_a_fresh_grid_of_each_basis():
    uniform, mixed = _methanol_mol(), _methanol_mol(excited=0)
    first = make_grids(uniform, 0)
    again = make_grids(mixed, 0)  # the points of the first call, the mask of this basis
    fresh = dft.gen_grid.Grids(mixed)
    fresh.level = 0
    fresh.build(with_non0tab=True)
    assert again.mol is mixed and first.mol is uniform
    for name in ("coords", "weights", "non0tab"):
        np.testing.assert_array_equal(getattr(again, name), getattr(fresh, name))
    assert again.non0tab.shape != first.non0tab.shape  # the mask follows the basis
