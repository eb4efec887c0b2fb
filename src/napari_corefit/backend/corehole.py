"""Excited core hole on one carbon by Delta-SCF (SPEC 1.3-1.5).

The excited carbon carries its own core-valence basis (``C@1``), which breaks the symmetry between
equivalent carbons and keeps the hole where it was put. The neutral excited state has the alpha
1s electron of that carbon moved into the lowest unoccupied orbital. During the SCF the hole is
kept by maximum overlap with the localised 1s; the valence electrons fill the lowest orbitals of
the core-hole state (recipe ``occupation="aufbau"``), so the excited electron ends in the core-hole
state's own lowest unoccupied orbital, which often differs from the ground state's LUMO (a local
antibonding orbital pulled down by the hole, instead of a pi* elsewhere in the molecule).
Recipe version 2 kept every orbital by overlap (``occupation="lumo"``).

A converged state is accepted only if it passes the checks of :func:`_converged_state`; where
aufbau oscillates between two orbitals, :func:`_descend` converges each occupation on its own
(docs/backend.md, "Which excited state").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from pyscf import scf

from napari_corefit.backend.fastscf import make_grids, make_ks, xc_energies, xc_energy
from napari_corefit.backend.groundstate import (build_mol, lowdin_weights, overlap_sqrt,
                                                run_ground_state)
from napari_corefit.backend.occupation import core_hole_occ, excited_electron_occ, set_occupation
from napari_corefit.backend.recipe import HARTREE_EV

__all__ = ["SiteResult", "SiteGroundState", "compute_core_hole", "site_ground_state",
           "energy_difference", "localise_core_hole", "core_hole_occ", "set_occupation"]


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
    on_atom = np.array([lab[0] == atom for lab in mf.mol.ao_labels(fmt=False)])
    x = (overlap_sqrt(mf) @ c[:, core])[on_atom]
    pop = x.T @ x
    w, u = np.linalg.eigh(pop)
    u = u[:, ::-1]  # largest population first
    c[:, core] = c[:, core] @ u
    hole = int(core[0])
    return c, hole, float(w[-1])


def _run(solver, dm0):
    """Run an SCF from ``dm0``; returns the number of cycles it took."""
    # no extra unshifted diagonalisation inside the SCF: with a degenerate pi* pair it rotates
    # the pair and reports a converged state as not converged; the unshifted orbitals are taken
    # afterwards (_converged_state)
    solver.conv_check = False
    counter = {"n": 0}

    def count(envs):
        counter["n"] += 1

    solver.callback = count
    solver.kernel(dm0=dm0)
    return counter["n"]


def _mom_solve(mf, mo0, occ0, stages, check=None, history=None):
    """Run the fallback chain; returns the accepted solver, its stage name, total cycles and
    what ``check`` returned for it.

    Every stage restarts from the initial orbitals (a diverged density is a poor start) and
    keeps the occupation rule's reference to them. A stage counts only if it converges *and*
    ``check(solver)`` accepts the state (raises ``_SiteFailure`` otherwise): a stage that
    converges to a state that fails the checks (the hole escaped, a lower empty orbital) hands
    over to the next stage. Raises the last check's failure if no stage is accepted. Each
    stage's last orbitals and orbital energies are appended to ``history`` (a list) if given.
    """
    cycles, rejected = 0, None
    dm0 = mf.make_rdm1(mo0, occ0)
    for name, setup in stages:
        solver = setup(mf)
        cycles += _run(solver, dm0)
        if history is not None:
            history.append((name, np.array(solver.mo_coeff), np.array(solver.mo_energy)))
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
                           f"{rejected[0]})", cycles=cycles)
    raise _SiteFailure(f"core-hole SCF not converged after {cycles} cycles", cycles=cycles)


def _converged_state(mf, c, hole, nocc, atom, recipe, other_cores=None, require_aufbau=True):
    """Orbitals of a converged core-hole state and the checks on it (``_SiteFailure``).

    Orbitals come from the unshifted Fock matrix: level shifts of the fallback stages move
    virtual energies, and a degenerate pi* pair may be rotated. ``other_cores`` are the ground
    state's occupied core orbitals other than the hole (AO coefficients, columns); they must stay
    occupied in both spins. Returns a dict with ``eps``, ``ca`` (alpha), ``empty`` (mask), ``h``
    (the hole), ``x`` (the excited electron), ``hole_population``, ``core_weight`` and
    ``aufbau_gap`` (Hartree by which the lowest empty valence orbital lies below the excited
    electron's, 0 if none; above ``AUFBAU_TOLERANCE`` is a failure if ``require_aufbau``).
    """
    s = mf.get_ovlp()
    core_weight = 1.0
    if other_cores is not None and other_cores.shape[1]:
        core_weight = _core_weight(mf, other_cores, s)
        if core_weight < MIN_CORE_WEIGHT:
            raise _SiteFailure(f"another atom's 1s lost {1 - core_weight:.2f} of an electron "
                               f"(the hole spread over two cores)")
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
        gap = float(eps[x] - eps[below].min()) if below.size else 0.0
        if require_aufbau and gap > AUFBAU_TOLERANCE:
            raise _SiteFailure(f"not the lowest state: an empty orbital lies "
                               f"{gap * HARTREE_EV:.2f} eV below the excited electron")
    else:
        gap = 0.0
        ov_exc = (ca.T @ s @ c[:, nocc]) ** 2  # the excited electron started in the LUMO
        x = int(np.argmax(np.where(~empty, ov_exc, -1)))
    on_atom = [lab[0] == atom for lab in mf.mol.ao_labels(fmt=False)]
    population = float(lowdin_weights(mf, ca[:, [h]])[on_atom].sum())
    if population < recipe.min_hole_population:
        raise _SiteFailure(f"hole escaped (population {population:.2f} on atom)")
    if ov_hole[h] < 0.5:
        raise _SiteFailure("occupation lost: the hole left the initial 1s orbital")
    return {"eps": eps, "ca": ca, "empty": empty, "h": h, "x": x,
            "hole_population": population, "core_weight": core_weight, "aufbau_gap": gap}


def _core_weight(mf, cores, s):
    """Smallest share of the subspace ``cores`` that lies in the occupied space, over both
    spins: 1 when every one of those 1s orbitals stays filled, ~0.5 when one is half empty.

    The smallest singular value of the overlap between the two subspaces is the cosine of their
    largest principal angle, so a core hole shared between two atoms shows up even when the
    empty orbital itself still looks like the target's 1s (its overlap with the target's
    localised 1s above 0.99 and its population on the target atom too: QM9 #343 C0, where the
    second-order solver converged to such a state 8.5 eV below the real one; docs/backend.md).
    """
    weight = 1.0
    for coeff, occ in zip(mf.mo_coeff, mf.mo_occ):
        proj = cores.T @ s @ coeff[:, occ > 0]
        weight = min(weight, float(np.linalg.svd(proj, compute_uv=False).min() ** 2))
    return weight


def _descend(make_solver, start_coeff, start_energy, hole, n_alpha, n_beta, check):
    """Last resort where aufbau oscillates: converge the excited electron in a fixed orbital and
    move it down until the state is aufbau or the states repeat.

    From the last iterate of the DIIS stage (``start_coeff``/``start_energy``, both spins) two
    starts are tried: the electron in the highest filled alpha orbital and in the lowest empty
    one, the pair that traded places from cycle to cycle. Each state is converged with the
    electron followed by overlap (:func:`excited_electron_occ`) and checked by ``check`` (without
    the aufbau test); if an empty orbital lies below the electron's, the electron moves into it
    and the new state is converged in turn, until a state is aufbau (accepted: the recipe's
    state) or the energies repeat. A repeat means aufbau has no self-consistent solution here:
    each of two orbitals falls below the other once the electron sits in it. Then the lower
    energy of the cycle is taken if its lowest empty orbital is less than ``MAX_PAIR_GAP``
    below the electron's (docs/backend.md "Which excited state").

    Returns ``(solver, stage, cycles, state)`` with ``stage`` ``"descent"`` (aufbau reached) or
    ``"descent-pair"``; if nothing was accepted, ``solver`` and ``state`` are None and ``stage``
    says why.
    """
    s = make_solver().get_ovlp()
    h = int(np.argmax((hole @ s @ start_coeff[0]) ** 2))
    order = [i for i in np.argsort(start_energy[0], kind="stable") if i != h]
    beta = np.zeros_like(start_energy[1])
    beta[np.argsort(start_energy[1], kind="stable")[:n_beta]] = 1.0
    found, cycles = [], 0  # every state converged, over both starts
    for first in order[n_alpha - 1:n_alpha + 1]:
        alpha = np.zeros_like(start_energy[0])
        alpha[order[:n_alpha - 1]] = 1.0
        alpha[first] = 1.0
        coeff, occ, excited = start_coeff, np.array([alpha, beta]), start_coeff[0][:, first]
        for _ in range(MAX_DESCENT_STEPS):
            solver = excited_electron_occ(make_solver(), hole, excited, n_alpha, n_beta)
            cycles += _run(solver, solver.make_rdm1(coeff, occ))
            if not solver.converged:
                break
            try:
                state = check(solver)
            except _SiteFailure:
                break
            if state["aufbau_gap"] <= AUFBAU_TOLERANCE:
                return solver, "descent", cycles, state
            if any(abs(solver.e_tot - e) < 1e-5 for e, _, _ in found):
                break  # a state seen before: the cycle closed (or this start joined it)
            found.append((solver.e_tot, solver, state))
            eps, ca, empty, x = (state[k] for k in ("eps", "ca", "empty", "x"))
            below = np.flatnonzero(empty & (eps < eps[x]))
            below = below[below != state["h"]]
            lowest = int(below[np.argmin(eps[below])])
            alpha = (~empty).astype(np.float64)
            alpha[x], alpha[lowest] = 0.0, 1.0
            coeff = np.array([ca, solver.mo_coeff[1]])
            occ = np.array([alpha, solver.mo_occ[1]])
            excited = ca[:, lowest]
    if not found:
        return None, "no state converged", cycles, None
    e, solver, state = min(found, key=lambda item: item[0])
    if state["aufbau_gap"] < MAX_PAIR_GAP:
        state["partner"] = _pair_partner(state, found, s)
        return solver, "descent-pair", cycles, state
    return None, (f"the lowest of {len(found)} states has an empty orbital "
                  f"{state['aufbau_gap'] * HARTREE_EV:.2f} eV below the electron's"), cycles, None


def _pair_partner(state, found, s):
    """The other state of an aufbau cycle: the one whose excited electron sits in the orbital
    that lies below the electron of ``state``. Returns ``(energy above state's, Hartree;
    that state's converged solver and checked state)``, or None."""
    eps, ca, empty, x = (state[k] for k in ("eps", "ca", "empty", "x"))
    below = np.flatnonzero(empty & (eps < eps[x]))
    below = below[below != state["h"]]
    lowest = ca[:, below[np.argmin(eps[below])]]
    best, like = None, 0.5
    for e, solver, other in found:
        if other is state:
            continue
        ov = float((lowest @ s @ other["ca"][:, other["x"]]) ** 2)
        if ov > like:
            best, like = (e, solver, other), ov
    if best is None:
        return None
    e, solver, other = best
    return e - min(item[0] for item in found), solver, other


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


@dataclass
class SiteGroundState:
    """A carbon's mixed-basis ground state and its localised 1s: where both the core-excited
    state (:func:`compute_core_hole`) and the core-ionised cation (``ionisation``) start."""

    mol: object
    gs: object  # converged RKS in the mixed basis
    c: np.ndarray  # orbitals with column ``hole`` the 1s localised on the carbon
    hole: int
    nocc: int
    other_cores: np.ndarray  # the other occupied 1s orbitals (AO coefficients, columns)


def site_ground_state(molecule, atom, recipe, dm_uniform=None, mol_uniform=None):
    """The mixed-basis ground state of a site (``C@1`` basis on ``atom``) and its localised 1s.

    Raises ``_SiteFailure`` when the 1s cannot be localised on the carbon. The caller clears
    ``result.gs._numint``'s cache when done (AO values of this basis: hundreds of MB).
    """
    mol = build_mol(molecule, recipe, excited=atom)
    dm0 = None
    if dm_uniform is not None:
        dm0 = scf.addons.project_dm_nr2nr(mol_uniform, dm_uniform, mol)
    gs = run_ground_state(mol, recipe, dm0=dm0)
    c, hole, pop0 = localise_core_hole(gs, atom)
    site = SiteGroundState(mol, gs, c, hole, int(np.count_nonzero(gs.mo_occ > 0)),
                           np.zeros((c.shape[0], 0)))
    if pop0 < recipe.min_hole_population:
        raise _SiteFailure(f"1s orbital not localisable on atom {atom} ({pop0:.2f})")
    cores = np.flatnonzero((gs.mo_energy < -5.0) & (gs.mo_occ > 0))
    site.other_cores = c[:, cores[cores != hole]]
    return site


def energy_difference(site, mf, recipe):
    """E(state ``mf``) - E(ground state) in eV, both exchange-correlation energies on the
    recipe's fine energy grid when it differs from the SCF grid (``fastscf.xc_energies``)."""
    gs = site.gs
    e_gs, e_x = gs.e_tot, mf.e_tot
    if recipe.energy_grid_level is not None and recipe.energy_grid_level != recipe.grid_level:
        # both converged densities re-integrated on the fine grid in one pass
        dm_gs, dm_x = gs.make_rdm1(), mf.make_rdm1()
        fine = make_grids(site.mol, recipe.energy_grid_level)
        fine_gs, fine_x = xc_energies(mf, [dm_gs, dm_x], fine)
        e_gs += fine_gs - xc_energy(gs, dm_gs, gs.grids)
        e_x += fine_x - xc_energy(mf, dm_x, mf.grids)
    return (e_x - e_gs) * HARTREE_EV


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
    site = None
    try:
        site = site_ground_state(molecule, atom, recipe, dm_uniform, mol_uniform)
        mol, gs, c, hole, nocc = site.mol, site.gs, site.c, site.hole, site.nocc
        other_cores = site.other_cores
        occ_a = (gs.mo_occ > 0).astype(np.float64)
        occ_b = occ_a.copy()
        occ_a[hole] = 0.0
        occ_a[nocc] = 1.0  # the excited electron in the ground state's LUMO
        mo0 = np.array([c, c])
        occ0 = np.array([occ_a, occ_b])
        mf = set_occupation(make_ks(mol, recipe, unrestricted=True, share=gs), recipe, mo0, occ0,
                            c[:, hole])
        history = []
        try:
            mf, stage, cycles, state = _mom_solve(
                mf, mo0, occ0, _fallback_stages(recipe),
                check=lambda m: _converged_state(m, c, hole, nocc, atom, recipe, other_cores),
                history=history)
        except _SiteFailure as failure:
            if recipe.occupation != "aufbau" or not history:
                res.stage = "none"
                raise
            _, start_coeff, start_energy = history[0]  # the DIIS stage's last iterate
            mf, stage, extra, state = _descend(
                lambda: make_ks(mol, recipe, unrestricted=True, share=gs), start_coeff,
                start_energy, c[:, hole], int(occ0[0].sum()), int(occ0[1].sum()),
                lambda m: _converged_state(m, c, hole, nocc, atom, recipe, other_cores,
                                           require_aufbau=False))
            cycles = failure.cycles + extra
            if mf is None:
                res.stage = "none"
                res.cycles = cycles
                raise _SiteFailure(f"{failure}; descent ({extra} cycles): {stage}") from None
        res.cycles, res.stage = cycles, stage
        eps, ca, empty, h, x = (state[k] for k in ("eps", "ca", "empty", "h", "x"))
        res.hole_population = state["hole_population"]
        res.excitation_energy = energy_difference(site, mf, recipe)
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
        if state.get("partner") is not None:
            # a descent-pair state: the transition into the other orbital of the pair, which
            # lies below the electron's, is the other state of the cycle: at its Delta-SCF
            # energy, with its own hole and orbital (docs/backend.md)
            de, _, other = state["partner"]
            d = np.einsum("kab,a,b->k", r, other["ca"][:, other["h"]],
                          other["ca"][:, other["x"]])
            order = np.argsort(np.append(res.spec_energy, de * HARTREE_EV), kind="stable")
            res.spec_energy = np.append(res.spec_energy, de * HARTREE_EV)[order]
            res.spec_xyz = np.vstack([res.spec_xyz, d ** 2])[order]
    except _SiteFailure as exc:
        res.status = f"failed: {exc}"
    except Exception as exc:  # noqa: BLE001 - a failed site must never crash a build
        res.status = f"failed: {type(exc).__name__}: {exc}"
    finally:
        if site is not None:
            site.gs._numint.clear_cache()  # AO values of this site's basis: hundreds of MB
    res.seconds = time.perf_counter() - t0
    return res


#: a converged state in which the other atoms' 1s orbitals are filled by less than this (smallest
#: principal share, :func:`_core_weight`) is a collapsed state, not the recipe's core hole;
#: ordinary states give > 0.999 (docs/backend.md)
MIN_CORE_WEIGHT = 0.95

#: states converged by :func:`_descend` before the cycle must close
MAX_DESCENT_STEPS = 5
#: Hartree: the lower state of an aufbau cycle is accepted only if its lowest empty orbital lies
#: less than this below the excited electron's (~1 eV; docs/backend.md)
MAX_PAIR_GAP = 0.04

#: Hartree by which an empty orbital may lie below the excited electron's in a converged aufbau
#: state (near-degenerate pairs swap order between the last shifted and the unshifted Fock matrix)
AUFBAU_TOLERANCE = 0.002


class _SiteFailure(Exception):
    def __init__(self, message, cycles=0):
        super().__init__(message)
        self.cycles = cycles
