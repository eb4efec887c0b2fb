"""Excited core hole on one carbon by Delta-SCF (SPEC 1.3-1.5).

The excited carbon carries its own core-valence basis (``C@1``), which breaks the symmetry between
equivalent carbons and keeps the hole where it was put. The neutral excited state has the alpha
1s electron of that carbon moved into the lowest unoccupied orbital. During the SCF the hole is
kept by maximum overlap with the localised 1s; the valence electrons fill the lowest orbitals of
the core-hole state (recipe ``occupation="aufbau"``), so the excited electron ends in the core-hole
state's own lowest unoccupied orbital, which often differs from the ground state's LUMO (a local
antibonding orbital pulled down by the hole, instead of a pi* elsewhere in the molecule).
Recipe version 2 kept every orbital by overlap (``occupation="lumo"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from pyscf import scf

from napari_corefit.backend.fastscf import make_grids, make_ks, xc_energies, xc_energy
from napari_corefit.backend.groundstate import build_mol, lowdin_weights, run_ground_state
from napari_corefit.backend.recipe import HARTREE_EV

__all__ = ["SiteResult", "compute_core_hole", "localise_core_hole", "core_hole_occ",
           "set_occupation"]


@dataclass
class SiteResult:
    """One carbon site's core-hole calculation."""

    atom_index: int
    status: str = "ok"
    excitation_energy: float = np.nan  # eV, E(core hole) - E(ground state), same mixed basis
    hole_population: float = np.nan
    s2: float = np.nan
    seconds: float = 0.0
    cycles: int = 0
    stage: str = ""  # which solver of the fallback chain converged
    spec_energy: np.ndarray = field(default_factory=lambda: np.zeros(0))  # eV rel. E_exc
    spec_xyz: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # |<1s|r_k|v>|^2

    @property
    def spec_intensity(self):
        return self.spec_xyz.mean(axis=1) if self.spec_xyz.size else np.zeros(0)


def localise_core_hole(mf, atom):
    """Rotate the occupied core orbitals so that the first one lies on ``atom``.

    Within the occupied core subspace (orbitals below -5 Hartree), the combination with the
    largest Loewdin population on ``atom`` is the leading eigenvector of that population's
    matrix. A rotation inside the occupied space leaves the determinant unchanged.

    Returns
    -------
    mo_coeff : ndarray
        Orbitals with column ``hole`` replaced by the localised 1s.
    hole : int
        Column of the localised 1s orbital.
    population : float
        Its Loewdin population on ``atom``.
    """
    c = mf.mo_coeff.copy()
    core = np.flatnonzero((mf.mo_energy < -5.0) & (mf.mo_occ > 0))
    s = mf.get_ovlp()
    evals, evecs = np.linalg.eigh(s)
    s_half = (evecs * np.sqrt(evals)) @ evecs.T
    on_atom = np.array([lab[0] == atom for lab in mf.mol.ao_labels(fmt=False)])
    x = (s_half @ c[:, core])[on_atom]
    pop = x.T @ x
    w, u = np.linalg.eigh(pop)
    u = u[:, ::-1]  # largest population first
    c[:, core] = c[:, core] @ u
    hole = int(core[0])
    return c, hole, float(w[-1])


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


def _mom_solve(mf, mo0, occ0, stages, check=None):
    """Run the fallback chain; returns the accepted solver, its stage name, total cycles and
    what ``check`` returned for it.

    Every stage restarts from the initial orbitals (a diverged density is a poor start) and
    keeps the occupation rule's reference to them. A stage counts only if it converges *and*
    ``check(solver)`` accepts the state (raises ``_SiteFailure`` otherwise): a stage that
    converges to a state that fails the checks (the hole escaped, a lower empty orbital) hands
    over to the next stage. Raises the last check's failure if no stage is accepted.
    """
    cycles, rejected = 0, None
    dm0 = mf.make_rdm1(mo0, occ0)
    for name, setup in stages:
        solver = setup(mf)
        # no extra unshifted diagonalisation inside the SCF: with a degenerate pi* pair it
        # rotates the pair and reports a converged state as not converged; the unshifted
        # orbitals are taken afterwards (_converged_state)
        solver.conv_check = False
        counter = {"n": 0}

        def count(envs, counter=counter):
            counter["n"] += 1

        solver.callback = count
        solver.kernel(dm0=dm0)
        cycles += counter["n"]
        if not solver.converged:
            continue
        if check is None:
            return solver, name, cycles, None
        try:
            return solver, name, cycles, check(solver)
        except _SiteFailure as exc:
            rejected = (name, exc)
    if rejected is not None:
        raise _SiteFailure(f"{rejected[1]} (after {cycles} cycles, last stage "
                           f"{rejected[0]})")
    raise _SiteFailure(f"core-hole SCF not converged after {cycles} cycles")


def _converged_state(mf, c, hole, nocc, atom, recipe):
    """Orbitals of a converged core-hole state and the checks on it (``_SiteFailure``).

    Orbitals come from the unshifted Fock matrix: level shifts of the fallback stages move
    virtual energies, and a degenerate pi* pair may be rotated. Returns a dict with ``eps``,
    ``ca`` (alpha), ``empty`` (mask), ``h`` (the hole), ``x`` (the excited electron) and
    ``hole_population``.
    """
    s = mf.get_ovlp()
    fock = mf.get_fock(dm=mf.make_rdm1())
    eps, ca = mf.eig(fock, s)
    eps, ca = eps[0], ca[0]
    c_occ = mf.mo_coeff[0][:, mf.mo_occ[0] > 0]
    occ_weight = ((c_occ.T @ s @ ca) ** 2).sum(axis=0)  # ~1 occupied, ~0 empty
    ov_hole = (ca.T @ s @ c[:, hole]) ** 2
    empty = occ_weight < 0.5
    h = int(np.argmax(np.where(empty, ov_hole, -1)))
    if recipe.occupation == "aufbau":
        # the excited electron: the highest occupied alpha orbital
        x = int(np.argmax(np.where(~empty, eps, -np.inf)))
        below = np.flatnonzero(empty & (eps < eps[x]))
        below = below[below != h]
        if below.size and eps[x] - eps[below].min() > AUFBAU_TOLERANCE:
            raise _SiteFailure(f"not the lowest state: an empty orbital lies "
                               f"{(eps[x] - eps[below].min()) * HARTREE_EV:.2f} eV below "
                               f"the excited electron")
    else:
        ov_exc = (ca.T @ s @ c[:, nocc]) ** 2  # the excited electron started in the LUMO
        x = int(np.argmax(np.where(~empty, ov_exc, -1)))
    on_atom = [lab[0] == atom for lab in mf.mol.ao_labels(fmt=False)]
    population = float(lowdin_weights(mf, ca[:, [h]])[on_atom].sum())
    if population < recipe.min_hole_population:
        raise _SiteFailure(f"hole escaped (population {population:.2f} on atom)")
    if ov_hole[h] < 0.5:
        raise _SiteFailure("occupation lost: the hole left the initial 1s orbital")
    return {"eps": eps, "ca": ca, "empty": empty, "h": h, "x": x,
            "hole_population": population}


def _fallback_stages(recipe):
    """DIIS, then second order (SOSCF), then level shift with damping, then a stronger shift.

    The share of sites each stage rescues is measured on the database itself (the stored
    ``stage`` of every site; docs/backend.md). Second order comes right after DIIS: on the
    6,716 sites of the first database it rescued 49 of the 85 sites DIIS left, after 300 futile
    shifted cycles; tried second, it reached the same states at a third of the CPU time, and the
    level-shift sites' states too, at about the same cost (docs/backend.md).
    """

    def plain(mf):
        return mf

    def shifted(mf):
        mf.level_shift = 0.3
        mf.damp = 0.3
        mf.max_cycle = 2 * recipe.max_cycle
        return mf

    def strong(mf):
        mf.level_shift = 0.8
        mf.damp = 0.5
        mf.diis_space = 12
        mf.max_cycle = 3 * recipe.max_cycle
        return mf

    def second_order(mf):
        mf.level_shift = 0
        mf.damp = 0
        solver = mf.newton()  # keeps the instance's MOM get_occ
        solver.max_cycle = recipe.max_cycle
        return solver

    return [("diis", plain), ("newton", second_order), ("levelshift", shifted),
            ("strong-shift", strong)]


def compute_core_hole(molecule, atom, recipe, dm_uniform=None, mol_uniform=None):
    """Delta-SCF excited core hole on carbon ``atom`` and its spectrum sticks.

    Parameters
    ----------
    molecule : Molecule
    atom : int
        Index of the carbon.
    recipe : Recipe
    dm_uniform, mol_uniform : optional
        Ground-state density in the uniform basis, projected as the initial guess of the
        mixed-basis ground state (saves SCF cycles).

    Returns
    -------
    SiteResult
        ``status`` is ``"ok"`` or ``"failed: <reason>"``; a failure never raises.
    """
    t0 = time.perf_counter()
    res = SiteResult(atom_index=atom)
    gs = None
    try:
        mol = build_mol(molecule, recipe, excited=atom)
        dm0 = None
        if dm_uniform is not None:
            dm0 = scf.addons.project_dm_nr2nr(mol_uniform, dm_uniform, mol)
        gs = run_ground_state(mol, recipe, dm0=dm0)
        e_gs = gs.e_tot
        dm_gs = gs.make_rdm1()
        regrid = recipe.energy_grid_level is not None and \
            recipe.energy_grid_level != recipe.grid_level
        c, hole, pop0 = localise_core_hole(gs, atom)
        if pop0 < recipe.min_hole_population:
            raise _SiteFailure(f"1s orbital not localisable on atom {atom} ({pop0:.2f})")
        nocc = int(np.count_nonzero(gs.mo_occ > 0))
        occ_a = (gs.mo_occ > 0).astype(np.float64)
        occ_b = occ_a.copy()
        occ_a[hole] = 0.0
        occ_a[nocc] = 1.0  # the excited electron in the ground state's LUMO
        mo0 = np.array([c, c])
        occ0 = np.array([occ_a, occ_b])
        mf = set_occupation(make_ks(mol, recipe, unrestricted=True, share=gs), recipe, mo0, occ0,
                            c[:, hole])
        try:
            mf, stage, cycles, state = _mom_solve(
                mf, mo0, occ0, _fallback_stages(recipe),
                check=lambda m: _converged_state(m, c, hole, nocc, atom, recipe))
        except _SiteFailure:
            res.stage = "none"
            raise
        res.cycles, res.stage = cycles, stage
        eps, ca, empty, h, x = (state[k] for k in ("eps", "ca", "empty", "h", "x"))
        res.hole_population = state["hole_population"]
        e_x = mf.e_tot
        if regrid:
            # both converged densities re-integrated on the fine grid in one pass (fastscf)
            dm_x = mf.make_rdm1()
            fine = make_grids(mol, recipe.energy_grid_level)
            fine_gs, fine_x = xc_energies(mf, [dm_gs, dm_x], fine)
            e_gs += fine_gs - xc_energy(gs, dm_gs, gs.grids)
            e_x += fine_x - xc_energy(mf, dm_x, mf.grids)
        res.excitation_energy = (e_x - e_gs) * HARTREE_EV
        if not np.isfinite(res.excitation_energy):
            raise _SiteFailure("non-finite energy")
        res.s2 = float(mf.spin_square()[0])
        # spectrum: hole -> excited electron's orbital and every unoccupied orbital above it
        finals = [x] + [v for v in np.flatnonzero(empty) if v != h and eps[v] >= eps[x]]
        finals = np.array(finals, dtype=np.int64)
        r = mol.intor_symmetric("int1e_r")  # (3, nao, nao)
        dip = np.einsum("kab,a,bv->vk", r, ca[:, h], ca[:, finals])
        res.spec_energy = (eps[finals] - eps[x]) * HARTREE_EV
        res.spec_xyz = dip ** 2
    except _SiteFailure as exc:
        res.status = f"failed: {exc}"
    except Exception as exc:  # noqa: BLE001 - a failed site must never crash a build
        res.status = f"failed: {type(exc).__name__}: {exc}"
    finally:
        if gs is not None:
            gs._numint.clear_cache()  # AO values of this site's basis: hundreds of MB
    res.seconds = time.perf_counter() - t0
    return res


#: Hartree by which an empty orbital may lie below the excited electron's in a converged aufbau
#: state (near-degenerate pairs swap order between the last shifted and the unshifted Fock matrix)
AUFBAU_TOLERANCE = 0.002


class _SiteFailure(Exception):
    pass
