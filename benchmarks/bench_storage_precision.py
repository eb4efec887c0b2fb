"""Precision lost by compact storage: curves from stored sticks against full-precision sticks.

Stored shards keep sticks inside the grid windows, above weight thresholds, in float16 (SPEC
section 4). This computes a few molecules, broadens their full float64 sticks and the stored
ones onto the model grids, and prints the largest differences relative to each curve's maximum
and the lowest cosine similarity, next to the bytes per site.

    python benchmarks/bench_storage_precision.py [--smiles C=C CC(=O)O ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

DEFAULT = ["CC(=O)O", "c1ccncc1", "CC(C)CO", "FC(F)C#N", "OC1CC1C=O", "CN(C)C=O"]


def main():
    from napari_corefit.backend import Molecule, Recipe, load_database
    from napari_corefit.backend.compute import compute_molecule, set_threads
    from napari_corefit.backend.records import record_to_arrays
    from napari_corefit.backend.storage import write_shard
    from napari_corefit.spectra.grids import DOS_GRID, area_normalise, broaden

    p = argparse.ArgumentParser()
    p.add_argument("--smiles", nargs="+", default=DEFAULT)
    args = p.parse_args()
    set_threads(1)
    recipe = Recipe()
    recs = [compute_molecule(Molecule.from_smiles(s), recipe) for s in args.smiles]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_shard(tmp, "precision", [(r.key, record_to_arrays(r, recipe)) for r in recs],
                           recipe.to_dict())
        table = load_database(tmp)
        nbytes = Path(path).stat().st_size
    spec_e = np.arange(-2, 17, 0.1)
    worst_spec = worst_dos = 0.0
    min_cos = 1.0
    i = 0
    for rec in recs:
        for site in sorted(rec.sites, key=lambda s: s.atom_index):
            row = np.flatnonzero((table.molecules["key"][table.sites["molecule"]] == rec.key)
                                 & (table.sites["atom_index"] == site.atom_index))[0]
            full = broaden(site.core.spec_energy, site.core.spec_intensity, spec_e)
            a, b = table.spec_offsets[row], table.spec_offsets[row + 1]
            stored = broaden(table.spec_energy[a:b], table.spec_intensity[a:b], spec_e)
            worst_spec = max(worst_spec, np.abs(full - stored).max() / full.max())
            d = site.dos
            a, b = table.dos_offsets[row], table.dos_offsets[row + 1]
            for occ in (True, False):
                m_full = (d["occupation"] > 0) == occ
                f = broaden(d["energy"][m_full], (d["s"] + d["p"])[m_full], DOS_GRID.values)
                m_st = table.dos_occupied[a:b] == occ
                g = broaden(table.dos_energy[a:b][m_st], table.dos_sp[a:b][m_st],
                            DOS_GRID.values)
                f, g = area_normalise(f, 0.1), area_normalise(g, 0.1)
                worst_dos = max(worst_dos, np.abs(f - g).max() / f.max())
                min_cos = min(min_cos, float(f @ g / np.linalg.norm(f) / np.linalg.norm(g)))
            i += 1
    print(f"{len(recs)} molecules, {i} sites, shard {nbytes} bytes "
          f"({nbytes / i:.0f} bytes per site incl. fixed HDF5 overhead)")
    print(f"spectrum: max |full - stored| / max = {worst_spec:.2e}")
    print(f"DOS: max |full - stored| / max = {worst_dos:.2e}, min cosine {min_cos:.6f}")


if __name__ == "__main__":
    main()
