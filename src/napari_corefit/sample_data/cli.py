"""``corefit sample make``: regenerate a synthetic sample from a database with a seed."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(subparsers):
    p = subparsers.add_parser(
        "sample", help="synthetic atom-resolved spectrum images with a ground truth",
        description="Synthetic STEM-EELS samples built from database records.")
    sub = p.add_subparsers(dest="sample_command", metavar="SUBCOMMAND")
    m = sub.add_parser(
        "make", help="make a sample file (.hspy: SI + ADF + per-atom truth)",
        description="Place the carbon sites of real database molecules in the plane and "
        "simulate the ADF image and the C K-edge spectrum image (Poisson noise, power-law "
        "background); the per-atom truth (positions, site spectra, site DOS) goes into the "
        "file's metadata.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m.add_argument("--db", required=True, metavar="DIR", help="database directory")
    m.add_argument("--seed", type=int, default=0, help="random seed (layout and noise)")
    m.add_argument("-o", "--output", required=True, metavar="FILE.hspy")
    m.add_argument("--dose", type=float, default=2e4,
                   help="carbon K-edge counts per carbon atom")
    m.add_argument("--size", type=int, default=112, help="scan size, pixels (square)")
    m.add_argument("--pixel", type=float, default=0.02, metavar="NM", help="pixel size, nm")
    m.add_argument("--probe", type=float, default=0.06, metavar="NM", help="probe FWHM, nm")
    m.add_argument("--sb", type=float, default=1.0, metavar="RATIO",
                   help="signal/background near a carbon atom (284-300 eV)")
    m.add_argument("--resolution", type=float, default=None, metavar="EV",
                   help="instrument resolution FWHM, eV (total width stays the model's)")
    m.add_argument("--energy", type=float, nargs=3, default=(250.0, 0.2, 400),
                   metavar=("START", "STEP", "N"), help="energy-loss axis, eV")
    m.add_argument("--molecules", default=None, metavar="KEYS",
                   help="comma-separated molecule keys or SMILES to use (default: all usable)")
    m.add_argument("--spectra", choices=["continuum", "discrete"], default="continuum",
                   help="how sticks become spectra: the realistic recipe (default) or the "
                        "discrete lines the models before 2026-12-08 were trained on")
    m.set_defaults(func=_make)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _molecule_indices(table, text):
    if not text:
        return None
    want = [w.strip() for w in text.split(",") if w.strip()]
    keys = [str(k) for k in table.molecules["key"]]
    smiles = [str(s) for s in table.molecules["smiles"]]
    out = []
    for w in want:
        if w in keys:
            out.append(keys.index(w))
        elif w in smiles:
            out.append(smiles.index(w))
        else:
            raise ValueError(f"molecule {w!r} is not in the database")
    return out


def _make(args):
    from napari_corefit.backend import load_database
    from napari_corefit.sample_data import write_sample
    from napari_corefit.sample_data.generate import SampleSettings, make_sample
    from napari_corefit.spectra.grids import EnergyGrid

    out = Path(args.output)
    if out.suffix.lower() != ".hspy":
        raise ValueError(f"{out}: the sample is written as .hspy")
    table = load_database(args.db)
    start, step, n = args.energy
    settings = SampleSettings(size=args.size, pixel_nm=args.pixel, probe_fwhm_nm=args.probe,
                              dose=args.dose, signal_to_background=args.sb,
                              resolution_fwhm=args.resolution,
                              energy=EnergyGrid(start, step, int(n)),
                              **({} if args.spectra == "continuum" else {"continuum": None}))
    si, adf = make_sample(table, settings, seed=args.seed,
                          molecules=_molecule_indices(table, args.molecules),
                          db_path=str(args.db))
    write_sample(out, si, adf)
    n_atoms = len(si.metadata.Corefit.truth.z)
    n_c = len(si.metadata.Corefit.truth.carbon)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {args.size}x{args.size} pixels, "
          f"{int(n)} channels, {n_atoms} atoms ({n_c} carbons), dose {args.dose:g} counts per "
          f"carbon, from {table.n_molecules} molecules of {args.db}")
    return 0
