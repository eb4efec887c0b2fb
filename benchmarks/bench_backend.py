"""Seconds per carbon site: the project's backend against the straightforward PySCF script.

Both run in the same process on the same molecule (default: QM9 CC1OC2CC(C)(O)C12, 21 atoms,
7 carbons, the molecule of SPEC section 7) with the same basis and functional. The baseline is
:func:`napari_corefit.backend.reference.reference_excitation` (density fitting, default grids,
conv_tol 1e-7, nothing shared between SCFs) plus one plain ground state for the DOS; the project
path is :func:`compute_molecule`. Prints seconds per site (wall and CPU), the speed-up, and the
first-transition energy differences.

    python benchmarks/bench_backend.py [--smiles S] [--carbons N] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    from pyscf import dft, lib

    from napari_corefit.backend import Molecule, Recipe
    from napari_corefit.backend.compute import compute_molecule
    from napari_corefit.backend.groundstate import build_mol
    from napari_corefit.backend.molecules import qm9_molecules
    from napari_corefit.backend.reference import reference_excitation

    p = argparse.ArgumentParser()
    p.add_argument("--smiles", default="CC1OC2CC(C)(O)C12")
    p.add_argument("--carbons", type=int, help="only the first N carbons in the baseline")
    p.add_argument("--threads", type=int, default=2,
                   help="cores: baseline threads, project worker processes")
    args = p.parse_args()
    lib.num_threads(args.threads)

    mol = next((m for m in qm9_molecules(min_heavy=8, max_heavy=8) if m.smiles == args.smiles),
               None) or Molecule.from_smiles(args.smiles)
    recipe = Recipe()
    print(f"{mol.key} {mol.smiles}: {mol.n_atoms} atoms, {len(mol.carbons)} carbons; "
          f"{args.threads} threads; {_cpu_model()}")

    # project path: the whole molecule (ground state, symmetry, every site), sites spread over
    # one single-threaded process per core as in a database build
    import resource

    w0 = time.perf_counter()
    c0 = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    rec = compute_molecule(mol, recipe, workers=args.threads)
    fast_wall = time.perf_counter() - w0
    fast_cpu = (time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
                - c0)
    fast = {s.atom_index: s.core for s in rec.sites}
    n_fast = sum(s.multiplicity for s in rec.sites)

    # baseline: one plain ground state for the DOS, then a plain Delta-SCF per carbon
    carbons = mol.carbons[: args.carbons] if args.carbons else mol.carbons
    w0, c0 = time.perf_counter(), time.process_time()
    gs = dft.RKS(build_mol(mol, recipe)).density_fit()
    gs.xc, gs.conv_tol, gs.verbose = recipe.functional, 1e-7, 0
    gs.kernel()
    ref = {}
    for a in carbons:
        e, sec, _ = reference_excitation(mol, a, recipe)
        ref[a] = e
        print(f"  baseline C{a}: {e:.3f} eV, {sec:.1f} s", flush=True)
    ref_wall = (time.perf_counter() - w0) / len(carbons)
    ref_cpu = (time.process_time() - c0) / len(carbons)

    print(f"\n{'site':>6}{'project eV':>12}{'baseline eV':>13}{'diff':>8}{'cycles':>8}  solver")
    diffs = []
    for a in carbons:
        site = fast.get(a)
        if site is None:  # equivalent to another carbon: computed once
            continue
        d = site.excitation_energy - ref[a]
        diffs.append(d)
        print(f"{a:>6}{site.excitation_energy:>12.3f}{ref[a]:>13.3f}{d:>8.3f}{site.cycles:>8}  "
              f"{site.stage or site.status}")
    fails = [s.status for s in rec.sites if s.status != "ok"]
    per_site_wall = fast_wall / n_fast
    print(f"\nproject : {per_site_wall:.1f} s/site wall, {fast_cpu / n_fast:.1f} s/site CPU "
          f"({len(rec.sites)} distinct sites of {n_fast}, failures: {fails or 'none'})")
    print(f"baseline: {ref_wall:.1f} s/site wall, {ref_cpu:.1f} s/site CPU")
    print(f"speed-up: {ref_wall / per_site_wall:.1f}x wall, {ref_cpu / (fast_cpu / n_fast):.1f}x "
          f"CPU; max |dE| {np.nanmax(np.abs(diffs)):.3f} eV over {len(diffs)} sites")


if __name__ == "__main__":
    main()
