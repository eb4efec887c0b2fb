"""``corefit compute``: one molecule, headless, with a figure for chemists."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["compute_and_report", "molecule_table", "plot_molecule"]


def _load_molecule(text):
    from napari_corefit.backend.molecules import Molecule

    path = Path(text)
    if path.suffix.lower() == ".xyz":
        if not path.exists():
            raise FileNotFoundError(f"no such XYZ file: {path}")
        return Molecule.from_xyz(path)
    print(f"embedding {text} (RDKit ETKDG + GFN2-xTB)", file=sys.stderr)
    return Molecule.from_smiles(text)


def molecule_table(record, recipe):
    """A :class:`SiteTable` of one computed molecule (through a temporary shard)."""
    from napari_corefit.backend.records import record_to_arrays
    from napari_corefit.backend.storage import load_database, write_shard

    with tempfile.TemporaryDirectory() as tmp:
        write_shard(tmp, "compute", [(record.key, record_to_arrays(record, recipe))],
                    recipe.to_dict())
        return load_database(tmp)


def compute_and_report(args):
    from napari_corefit.backend.compute import compute_molecule
    from napari_corefit.backend.recipe import Recipe
    from napari_corefit.backend.storage import site_rows

    mol = _load_molecule(args.molecule)
    recipe = Recipe()
    n = len(mol.carbons)
    if n == 0:
        raise ValueError(f"{args.molecule}: the molecule has no carbon atom")
    print(f"{mol.name}: {mol.n_atoms} atoms, {n} carbons", file=sys.stderr)

    def progress(done, total, message):
        print(f"  [{done}/{total}] {message}", file=sys.stderr)

    record = compute_molecule(mol, recipe, progress=progress, workers=os.cpu_count() or 1)
    if record.status != "ok":
        raise RuntimeError(f"{mol.name}: {record.status}")
    table = molecule_table(record, recipe)
    rows = list(site_rows(table))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        for row in rows:
            print(f"C{row['atom_index']:<3d} x{row['multiplicity']}  "
                  f"E_exc {row['excitation_energy_ev']} eV  1s {row['core_1s_ev']} eV  "
                  f"{row['status']}  ({row['seconds']} s)")
    if args.plot:
        plot_molecule(table, args.plot, title=f"{mol.name} ({mol.smiles or 'xyz'})")
        print(f"figure written to {args.plot}", file=sys.stderr)
    return 0


def plot_molecule(table, path, title=""):
    """Site spectra at absolute energies, the molecular spectrum, and occupied/unoccupied DOS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_corefit.backend import curves
    from napari_corefit.spectra.grids import DOS_GRID

    ok = table.ok()
    e_exc = ok.sites["excitation_energy"]
    axis = np.arange(np.floor(np.nanmin(e_exc)) - 3, np.ceil(np.nanmax(e_exc)) + 17, 0.05)
    spectra = curves.absolute_site_spectra(ok, axis)
    mult = ok.sites["multiplicity"].astype(float)
    total = (spectra * mult[:, None]).sum(0)
    dos = curves.site_dos(ok)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 1.5 + 1.1 * max(3, ok.n_sites)))
    step = spectra.max() * 1.1 if spectra.size else 1
    for i in range(ok.n_sites):
        label = f"C{ok.sites['atom_index'][i]} x{int(mult[i])}"
        ax1.plot(axis, spectra[i] + (i + 1) * step, lw=1)
        ax1.text(axis[-1], (i + 1) * step, label, ha="right", va="bottom", fontsize=8)
        ax1.axvline(e_exc[i], color="0.8", lw=0.5, zorder=0)
    ax1.plot(axis, total / max(total.max(), 1e-30) * step, color="k", lw=1.5,
             label="molecule (sum)")
    ax1.set_xlabel("energy loss (eV)")
    ax1.set_ylabel("intensity (stacked, arb. units)")
    ax1.set_title("C K edge (core hole, Delta-SCF)")
    ax1.legend(loc="upper left", fontsize=8)
    e = DOS_GRID.values
    dstep = dos.max() * 1.1 if dos.size else 1
    for i in range(ok.n_sites):
        ax2.fill_between(e, i * dstep, dos[i, 0] + i * dstep, color="tab:blue", alpha=0.6,
                         lw=0, label="occupied" if i == 0 else None)
        ax2.fill_between(e, i * dstep, dos[i, 1] + i * dstep, color="tab:orange", alpha=0.6,
                         lw=0, label="unoccupied" if i == 0 else None)
        ax2.text(e[0], i * dstep + 0.7 * dstep, f"C{ok.sites['atom_index'][i]}", fontsize=8)
    ax2.axvline(0, color="k", lw=0.5)
    ax2.set_xlabel("E - E_F (eV)")
    ax2.set_title("ground-state C s+p site DOS")
    ax2.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
