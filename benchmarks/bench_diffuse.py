"""How much do diffuse functions on the excited carbon change the broadened C K-edge spectrum?

Compares the recipe's core basis (cc-pCVDZ on the excited carbon) with cc-pCVDZ plus aug-cc-pVDZ's diffuse s, p, d shells there, on a
few QM9 molecules: first-transition energy, cosine similarity of the broadened site spectra on
the model window (-1..15 eV from the first peak), and the cost. Prints a table.

    python benchmarks/bench_diffuse.py [--molecules 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    from pyscf import lib

    from napari_corefit.backend import Recipe
    from napari_corefit.backend.corehole import compute_core_hole
    from napari_corefit.backend.molecules import qm9_molecules
    from napari_corefit.spectra.grids import SPECTRUM_GRID, broaden
    from napari_corefit.spectra.peaks import find_first_peak

    p = argparse.ArgumentParser()
    p.add_argument("--molecules", type=int, default=4)
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    lib.num_threads(1)
    mols = qm9_molecules(min_heavy=4, max_heavy=6, sample=args.molecules, seed=args.seed)
    base, aug = Recipe(), Recipe(core_basis="cc-pCVDZ+diffuse")
    fine = np.arange(-4, 26, 0.02)
    rows = []
    print(f"{'molecule':<16}{'C':>3}{'E base':>10}{'E aug':>10}{'dE':>8}{'cos':>7}"
          f"{'t base':>8}{'t aug':>8}")
    for m in mols:
        for atom in m.carbons[:2]:
            out = []
            for r in (base, aug):
                t = time.process_time()
                res = compute_core_hole(m, atom, r)
                out.append((res, time.process_time() - t))
            (a, ta), (b, tb) = out
            if a.status != "ok" or b.status != "ok":
                print(f"{m.smiles:<16}{atom:>3} failed: {a.status} / {b.status}")
                continue
            curves = []
            for res in (a, b):
                y = broaden(res.spec_energy, res.spec_intensity, fine)
                peak = find_first_peak(fine, y)
                curves.append(np.interp(SPECTRUM_GRID.values + peak, fine, y))
            u, v = curves
            cos = float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
            rows.append((b.excitation_energy - a.excitation_energy, cos, ta, tb))
            print(f"{m.smiles:<16}{atom:>3}{a.excitation_energy:>10.3f}{b.excitation_energy:>10.3f}"
                  f"{rows[-1][0]:>8.3f}{cos:>7.3f}{ta:>8.1f}{tb:>8.1f}", flush=True)
    r = np.array(rows)
    print(f"\nmean dE {r[:, 0].mean():+.3f} eV, median cosine {np.median(r[:, 1]):.3f} "
          f"(min {r[:, 1].min():.3f}), cost ratio aug/base {r[:, 3].sum() / r[:, 2].sum():.2f}")


if __name__ == "__main__":
    main()
