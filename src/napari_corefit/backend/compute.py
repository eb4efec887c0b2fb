"""One molecule, every carbon: the site records of the training database.

:func:`compute_molecule` is the backend's one entry point; runners (local pool, Dask) call it
on workers and hand the records to a single writer.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from napari_corefit.backend.corehole import SiteResult, compute_core_hole
from napari_corefit.backend.groundstate import build_mol, run_ground_state, site_dos_sticks
from napari_corefit.backend.recipe import Recipe
from napari_corefit.backend.symmetry import equivalent_carbons

__all__ = ["SiteRecord", "MoleculeRecord", "compute_molecule"]


@dataclass
class SiteRecord:
    """A carbon site: its core-hole result plus its ground-state site DOS sticks."""

    core: SiteResult
    equivalent: list  # atom indices of the symmetry class (first = computed atom)
    core_1s_ev: float  # ground-state 1s orbital energy of this carbon (uniform basis)
    dos: dict  # energy (eV rel. E_F), occupation, core, s, p, d per orbital

    @property
    def atom_index(self):
        return self.core.atom_index

    @property
    def multiplicity(self):
        return len(self.equivalent)

    @property
    def status(self):
        return self.core.status


@dataclass
class MoleculeRecord:
    key: str
    name: str
    source: str
    smiles: str
    geometry: str
    symbols: list
    coords: np.ndarray
    status: str = "ok"
    fermi_ev: float = np.nan
    seconds: float = 0.0
    gs_seconds: float = 0.0
    sites: list = field(default_factory=list)


def compute_molecule(molecule, recipe=None, progress=None, workers=1):
    """Ground state, site DOS and core-hole spectrum of every symmetry-distinct carbon.

    Parameters
    ----------
    molecule : Molecule
    recipe : Recipe, optional
        Defaults to ``Recipe()``.
    progress : callable, optional
        ``progress(done, total, message)`` after each site.
    workers : int
        Sites computed in this many processes (one thread each) after the molecule's ground
        state; for one molecule on several cores (``corefit compute``, the benchmark). Database
        builds run molecules in parallel instead and keep ``workers=1`` here.

    Returns
    -------
    MoleculeRecord
        Failures are recorded per site (``status``), or for the molecule when its ground state
        fails; nothing raises for a failed calculation.

    Examples
    --------
    >>> from napari_corefit.backend import Molecule
    >>> rec = compute_molecule(Molecule.from_smiles("C", optimise="mmff"))  # doctest: +SKIP
    >>> rec.sites[0].multiplicity, round(rec.sites[0].core.excitation_energy)  # doctest: +SKIP
    (1, 288)
    """
    recipe = recipe or Recipe()
    t0 = time.perf_counter()
    rec = MoleculeRecord(key=molecule.key, name=molecule.name, source=molecule.source,
                         smiles=molecule.smiles, geometry=molecule.geometry,
                         symbols=list(molecule.symbols), coords=np.asarray(molecule.coords))
    carbons = molecule.carbons
    if not carbons:
        rec.status = "failed: no carbon"
        return rec
    unsupported = set(molecule.symbols) - {"H", "C", "N", "O", "F"}
    if unsupported:
        # the recipe (6-31G*, cc-pCVDZ) and the model's domain are QM9's elements
        rec.status = f"failed: elements outside the recipe: {sorted(unsupported)}"
        return rec
    try:
        mol = build_mol(molecule, recipe)
        gs = run_ground_state(mol, recipe)
    except Exception as exc:  # noqa: BLE001
        rec.status = f"failed: ground state: {exc}"
        rec.seconds = time.perf_counter() - t0
        return rec
    rec.gs_seconds = time.perf_counter() - t0
    dm = gs.make_rdm1()
    classes = equivalent_carbons(molecule.symbols, molecule.coords)
    atoms = [cls[0] for cls in classes]
    cores = _core_holes(molecule, atoms, recipe, dm, mol, workers, progress)
    for cls, core in zip(classes, cores):
        dos = site_dos_sticks(gs, cls[0])
        rec.fermi_ev = dos["fermi_ev"]
        dos["energy"] = dos["energy"] - dos["fermi_ev"]
        rec.sites.append(SiteRecord(core=core, equivalent=list(cls),
                                    core_1s_ev=dos.pop("core_1s_ev"), dos=dos))
    rec.seconds = time.perf_counter() - t0
    return rec


def _core_holes(molecule, atoms, recipe, dm, mol, workers, progress):
    def report(n, atom, core):
        if progress is not None:
            progress(n, len(atoms), f"{molecule.name} C{atom}: {core.status}")

    if workers <= 1 or len(atoms) == 1:
        cores = []
        for atom in atoms:
            cores.append(compute_core_hole(molecule, atom, recipe, dm_uniform=dm,
                                           mol_uniform=mol))
            report(len(cores), atom, cores[-1])
        return cores
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("fork")  # the ground state is inherited, not pickled
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=set_threads,
                             initargs=(1,)) as pool:
        futures = [pool.submit(compute_core_hole, molecule, a, recipe, dm, mol) for a in atoms]
        cores = []
        for atom, fut in zip(atoms, futures):
            cores.append(fut.result())
            report(len(cores), atom, cores[-1])
    return cores


def set_threads(n: int):
    """Threads per worker for every BLAS and OpenMP pool in the process.

    numpy, scipy and PySCF each bring their own OpenBLAS; a pool left at the core count makes
    two workers on two cores fight over four threads (measured: ~3x slower eigh/dot).
    """
    os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        from pyscf import lib

        lib.num_threads(n)
    except Exception:  # noqa: BLE001
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:
        pass
