"""``corefit predict``: the engine on a spectrum image file, headless.

    corefit predict SI_FILE [--adf ADF_FILE] [--lowloss LL_FILE] [--model DIR] [--device auto]
                    [--atoms] [--batch-size N] -o OUT.hspy [--plot OUT.png]

Writes ``OUT.hspy`` (DOS cubes), ``OUT_maps.hspy``, ``OUT_image.hspy`` and, with ``--atoms``,
``OUT_atoms.csv`` and ``OUT_atoms.hspy`` (see :meth:`napari_corefit.engine.EngineResult.save`).
Progress goes to stderr (tqdm); nothing is written when the run fails or is interrupted.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "run", "plot_overview"]


def add_parser(subparsers):
    p = subparsers.add_parser(
        "predict", help="predict the site DOS of every pixel (and atom column) of an SI",
        description="Predict the ground-state site DOS of every pixel of an EELS carbon K-edge "
                    "spectrum image, and optionally of every atom column found in its ADF "
                    "image; write HyperSpy files (and a CSV table of the columns).")
    p.add_argument("si", metavar="SI_FILE", help="core-loss spectrum image (.hspy .zspy .dm4 "
                   ".emd ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.hspy",
                   help="output file; siblings OUT_maps.hspy, OUT_atoms.csv ... beside it")
    p.add_argument("--adf", metavar="ADF_FILE", help="ADF/HAADF image of the same scan")
    p.add_argument("--lowloss", metavar="LL_FILE", help="low-loss SI of the same scan")
    p.add_argument("--model", metavar="DIR", help="model directory (default: the bundled one)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="spectra per forward pass (default 1024 on CPU, 131072 on CUDA)")
    p.add_argument("--chunk-pixels", type=int, default=32768, metavar="N",
                   help="pixels read and preprocessed at once (bounds memory; default 32768)")
    p.add_argument("--amp", choices=["off", "fp16", "bf16"], default="off",
                   help="mixed precision for the network (default off: fp32)")
    p.add_argument("--atoms", action="store_true",
                   help="find atom columns and predict their summed spectra")
    p.add_argument("--min-distance", type=int, default=None, metavar="PX",
                   help="minimum column separation in pixels (default: estimated)")
    p.add_argument("--sum-radius", type=float, default=None, metavar="PX",
                   help="sum pixels within this radius of a column (default: its Voronoi cell)")
    p.add_argument("--window", action="append", default=None, metavar="CURVE:LOW:HIGH",
                   help="DOS integration window in eV rel. E_F, e.g. unoccupied:0:3 "
                        "(repeatable; default occupied:-3:0 and unoccupied:0:3)")
    p.add_argument("--sigma-max", type=float, default=None,
                   help="flag pixels whose relative ensemble spread exceeds this (default: the "
                   "model's own threshold, the 95th percentile on its validation spectra)")
    p.add_argument("--plot", metavar="OUT.png", help="also save an overview figure")
    p.add_argument("--lazy", action="store_true", help="read the SI lazily whatever its size")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from tqdm import tqdm

    from napari_corefit.engine import parse_window, predict
    from napari_corefit.io import load_spectrum_image
    from napari_corefit.model.checkpoint import load_default, load_model
    from napari_corefit.model.inference import resolve_device

    out = Path(args.output)
    if out.suffix.lower() not in (".hspy", ".zspy"):
        raise ValueError(f"output {out}: use a .hspy or .zspy file name")
    windows = dict(parse_window(w) for w in args.window) if args.window else None
    device = resolve_device(args.device)  # a clear error before any reading
    t0 = time.perf_counter()
    model = load_model(args.model, device=device) if args.model else load_default(device=device)
    atom_options = {"sum_radius": args.sum_radius}
    if args.min_distance is not None:
        atom_options["min_distance"] = args.min_distance
    bar = tqdm(total=1000, desc="corefit predict", unit="‰", file=sys.stderr,
               disable=args.quiet, bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<"
                                              "{remaining} {postfix}")

    def progress(fraction, message):
        bar.update(max(0, int(round(1000 * fraction)) - bar.n))
        bar.set_postfix_str(message, refresh=False)

    si = load_spectrum_image(args.si, adf=args.adf, lowloss=args.lowloss,
                             lazy=True if args.lazy else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    # a lazy SI may be larger than RAM, and its DOS cubes larger still (1200 floats per pixel):
    # they then go to memory-mapped files beside the output, removed when written
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".corefit-") as tmp:
        try:
            result = predict(si, model, device=device, batch_size=args.batch_size,
                             chunk_pixels=args.chunk_pixels,
                             amp=False if args.amp == "off" else args.amp, atoms=args.atoms,
                             atom_options=atom_options, windows=windows,
                             sigma_max=args.sigma_max, progress=progress,
                             store=tmp if si.lazy else None)
        finally:
            bar.close()
        written = result.save(out)
        if args.plot:
            plot_overview(result, args.plot)
            written.append(Path(args.plot))
        q = np.asarray(result.maps["quality"].data)
        n_atoms = 0 if result.atoms_table is None else len(result.atoms_table)
        del result
    print(f"corefit predict: {q.size} pixels ({int((q == 0).sum())} good, "
          f"{int((q & 1).sum())} masked){f', {n_atoms} atom columns' if args.atoms else ''} "
          f"on {device} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for p in written:
        print(p)
    return 0


def _pick_examples(result, k=3):
    """Three columns to show: the best-fitted usable ones (else the pixels with most counts)."""
    t = result.atoms_table
    if t is not None and len(t):
        ok = t[t["usable"]]
        if len(ok):
            rows = ok.sort_values("fit_quality", ascending=False).head(k)
            return [(f"atom {int(r.atom)}", int(r.atom), (r.y_px, r.x_px))
                    for r in rows.itertuples()]
    counts = np.nan_to_num(np.asarray(result.maps["edge_counts"].data, dtype=float), nan=-1)
    flat = np.argsort(counts.ravel())[::-1][:k]
    return [(f"pixel {np.unravel_index(i, counts.shape)}", None,
             np.unravel_index(i, counts.shape)) for i in flat]


def plot_overview(result, path):
    """Overview figure: image with columns, two DOS maps, three example columns' spectra + DOS.

    Parameters
    ----------
    result : EngineResult
    path : path of the PNG (or any matplotlib format) to write
    """
    from matplotlib.figure import Figure

    from napari_corefit.spectra.grids import SPECTRUM_GRID

    examples = _pick_examples(result)
    energy = result.occupied.axes_manager.signal_axes[0].axis
    fig = Figure(figsize=(13, 11), constrained_layout=True)
    has_inputs = result.atoms_input is not None and any(a is not None for _, a, _ in examples)
    rows = 3 if has_inputs else 2
    axes = fig.subplots(rows, 3)
    ax = axes[0, 0]
    img = result.image.data if result.image is not None else result.maps["edge_counts"].data
    ax.imshow(img, cmap="gray")
    ax.set_title(result.image.metadata.General.title if result.image is not None else "edge counts")
    if result.atoms_table is not None and len(result.atoms_table):
        t = result.atoms_table
        ax.plot(t["x_px"], t["y_px"], "r+", ms=5)
    for label, _, (y, x) in examples:
        ax.annotate(label, (x, y), color="yellow", fontsize=8)
    # two DOS maps: the integration windows first, then the HOMO/LUMO peak maps
    windows = [n for n in result.maps if n.startswith(("occupied_", "unoccupied_"))]
    titles = {"homo_ev": "highest occupied peak (eV rel. E_F)",
              "lumo_ev": "lowest unoccupied peak (eV rel. E_F)"}
    for a, name in zip(axes[0, 1:], (windows + ["lumo_ev", "homo_ev"])[:2]):
        im = a.imshow(result.maps[name].data, cmap="viridis")
        a.set_title(titles.get(name, f"DOS fraction in {name}"))
        fig.colorbar(im, ax=a, shrink=0.8)
    for j, (label, atom, (y, x)) in enumerate(examples):
        if atom is not None:
            mean, std = result.atoms_mean[atom], result.atoms_std[atom]
        else:
            iy, ix = int(y), int(x)
            mean = np.stack([result.occupied.data[iy, ix], result.unoccupied.data[iy, ix]])
            std = np.stack([result.occupied_std.data[iy, ix], result.unoccupied_std.data[iy, ix]])
        if has_inputs and atom is not None:
            a = axes[1, j]
            a.plot(SPECTRUM_GRID.values, result.atoms_input[atom], "k-")
            a.set_xlabel("energy loss relative to first peak (eV)")
            a.set_title(f"{label}: spectrum (model input)")
        a = axes[rows - 1, j]
        for c, (name, colour) in enumerate([("occupied", "C0"), ("unoccupied", "C3")]):
            a.plot(energy, mean[c], color=colour, label=name)
            a.fill_between(energy, mean[c] - std[c], mean[c] + std[c], color=colour, alpha=0.25)
        a.axvline(0, color="gray", lw=0.5)
        a.set_xlabel("energy relative to E_F (eV)")
        a.set_title(f"{label}: predicted site DOS (±σ)")
        a.legend(fontsize=8)
    for a in axes[rows - 1, len(examples):]:
        a.set_visible(False)
    if has_inputs:
        for a in axes[1, len(examples):]:
            a.set_visible(False)
    fig.savefig(path, dpi=110)
    return Path(path)
