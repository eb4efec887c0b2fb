"""Does a PySCF release change the backend's numbers? Recompute real database sites and anchors.

Recomputes the carbon sites of a few committed database molecules (their stored geometries) and
the backend's three anchors (ethylene, CO, benzene), and prints each excitation energy against
the stored one, with the PySCF version that ran. Run it once with the pinned PySCF and once with
the candidate (e.g. ``PYTHONPATH=/path/to/other/pyscf``) before changing the pin in
constraints.txt; docs/backend.md ("PySCF versions") keeps the results.

    python benchmarks/check_pyscf_version.py --db data/db --molecules 8
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv=None):
    import pyscf

    from napari_corefit.backend import Molecule, Recipe
    from napari_corefit.backend.compute import compute_molecule
    from napari_corefit.backend.storage import load_database

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="data/db")
    ap.add_argument("--molecules", type=int, default=8, help="database molecules to recompute")
    ap.add_argument("--max-atoms", type=int, default=12)
    ap.add_argument("--json", help="write the energies here")
    args = ap.parse_args(argv)

    table = load_database(args.db)
    mols = table.molecules
    # an even spread over the database, of molecules small enough to run in seconds
    small = np.flatnonzero((mols["n_atoms"] <= args.max_atoms) & (mols["status"] == "ok"))
    pick = small[np.linspace(0, small.size - 1, args.molecules).round().astype(int)]
    rows = []
    t0 = time.perf_counter()
    for m in pick:
        a, b = mols["atom_offsets"][m], mols["atom_offsets"][m + 1]
        symbols = [s.decode() if isinstance(s, bytes) else str(s) for s in mols["symbols"][a:b]]
        mol = Molecule(key=str(mols["key"][m]), name=str(mols["key"][m]), symbols=symbols, coords=mols["coords"][a:b],
                       source="db")
        rec = compute_molecule(mol, Recipe())
        stored = {int(table.sites["atom_index"][i]): float(table.sites["excitation_energy"][i])
                  for i in np.flatnonzero(table.sites["molecule"] == m)}
        for site in rec.sites:
            rows.append({"molecule": str(mols["key"][m]), "atom": site.atom_index,
                         "stored": stored.get(site.atom_index, np.nan),
                         "now": float(site.core.excitation_energy)})
    anchors = {}
    for smiles in ("C=C", "[C-]#[O+]", "c1ccccc1"):
        rec = compute_molecule(Molecule.from_smiles(smiles, optimise="mmff"), Recipe())
        anchors[smiles] = float(rec.sites[0].core.excitation_energy)
    print(f"PySCF {pyscf.__version__}: {len(rows)} database sites, {time.perf_counter() - t0:.0f} s")
    print(f"{'molecule':>12} {'atom':>4} {'stored eV':>10} {'now eV':>10} {'now-stored':>10}")
    for r in rows:
        print(f"{r['molecule']:>12} {r['atom']:4d} {r['stored']:10.4f} {r['now']:10.4f} "
              f"{r['now'] - r['stored']:+10.4f}")
    diff = np.array([r["now"] - r["stored"] for r in rows])
    print(f"max |now - stored| = {np.nanmax(np.abs(diff)):.4f} eV "
          "(stored as float32: 3e-5 eV at 290 eV)")
    for k, v in anchors.items():
        print(f"anchor {k:>12}: {v:.4f} eV")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"pyscf": pyscf.__version__, "sites": rows, "anchors": anchors}, fh,
                      indent=1)


if __name__ == "__main__":
    main()
