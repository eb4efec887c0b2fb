"""``corefit predict``: the engine on a spectrum image file, headless.

    corefit predict SI_FILE [--adf ADF_FILE] [--lowloss LL_FILE] [--model DIR] [--device auto]
                    [--atoms] [--batch-size N] -o OUT.hspy [--plot OUT.png]

Writes ``OUT.hspy`` (DOS cubes), ``OUT_maps.hspy``, ``OUT_image.hspy`` and, with ``--atoms``,
``OUT_atoms.csv`` and ``OUT_atoms.hspy`` (see :meth:`napari_corefit.engine.EngineResult.save`).
Progress goes to stderr (tqdm); nothing is written when the run fails or is interrupted.
"""

from __future__ import annotations

import shutil
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
    from napari_corefit.io import CorefitIOError, load_spectrum_image
    from napari_corefit.io.errors import file_message
    from napari_corefit.spectra.masks import describe_reasons
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
    # they then go to memory-mapped files beside the output, removed when written. Every output
    # is first written there under its final name and moved into place only when all of them
    # were written: a run that fails leaves nothing behind.
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
        reason = np.asarray(result.maps["reason"].data).astype(np.uint8)
        if not (reason == 0).any():
            raise CorefitIOError(file_message(
                si.path if si.path is not None else args.si,
                f"no usable pixel: {describe_reasons(reason)}"))
        staging = Path(tmp) / "out"
        staging.mkdir()
        moves = [(src, out.with_name(src.name)) for src in result.save(staging / out.name)]
        if args.plot:
            plot = Path(args.plot)
            (Path(tmp) / "plot").mkdir()
            moves.append((plot_overview(result, Path(tmp) / "plot" / plot.name,
                                        signal=si.signal), plot))
        q = np.asarray(result.maps["quality"].data)
        n_atoms = 0 if result.atoms_table is None else len(result.atoms_table)
        del result
        for src, dst in moves:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dst)
        written = [dst for _, dst in moves]
    masked = reason != 0
    why = f": {describe_reasons(reason[masked])}" if masked.any() else ""
    print(f"corefit predict: {q.size} pixels ({int((q == 0).sum())} good, "
          f"{int(masked.sum())} masked{why})"
          f"{f', {n_atoms} atom columns' if args.atoms else ''} "
          f"on {device} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for p in written:
        print(p)
    return 0


def _pick_examples(result, k=3):
    """Three columns to show: the best-fitted usable ones (else the pixels with most counts).

    Pixels are given as index tuples of the scan, ``(y, x)`` or ``(x,)``.
    """
    t = result.atoms_table
    if t is not None and len(t):
        ok = t[t["usable"]]
        if len(ok):
            rows = ok.sort_values("fit_quality", ascending=False).head(k)
            return [(f"atom {int(r.atom)}", int(r.atom), (r.y_px, r.x_px))
                    for r in rows.itertuples()]
    counts = np.nan_to_num(np.asarray(result.maps["edge_counts"].data, dtype=float), nan=-1)
    usable = np.asarray(result.maps["reason"].data) == 0
    counts = np.where(usable, counts, -1.0)  # usable pixels first
    flat = np.argsort(counts.ravel(), kind="stable")[::-1][:k]
    out = []
    for i in flat:
        idx = tuple(int(v) for v in np.unravel_index(i, counts.shape))
        out.append((f"pixel {idx[0] if len(idx) == 1 else idx}", None, idx))
    return out


def _pixel_curves(result, idx):
    """Mean and std (2, n) of the predicted DOS at one pixel (index tuple, () for a spectrum)."""
    mean = np.stack([np.asarray(result.occupied.data)[idx],
                     np.asarray(result.unoccupied.data)[idx]])
    std = np.stack([np.asarray(result.occupied_std.data)[idx],
                    np.asarray(result.unoccupied_std.data)[idx]])
    return mean, std


def _plot_dos(a, energy, mean, std, title):
    for c, (name, colour) in enumerate([("occupied", "C0"), ("unoccupied", "C3")]):
        a.plot(energy, mean[c], color=colour, label=name)
        a.fill_between(energy, mean[c] - std[c], mean[c] + std[c], color=colour, alpha=0.25)
    a.axvline(0, color="gray", lw=0.5)
    a.set_xlabel("energy relative to E_F (eV)")
    a.set_ylabel("DOS (1/eV, area-normalised)")
    a.set_title(title)
    a.legend(fontsize=8)


def _map_value(result, name, idx=()):
    data = np.asarray(result.maps[name].data, dtype=float)
    return float(data.reshape(-1)[0] if idx == () else data[idx])


def plot_overview(result, path, signal=None):
    """Overview figure that fits the scan: curves for a single spectrum, profiles along a line
    scan, maps of a 2-D scan (image with columns, two DOS maps, three examples' DOS).

    Parameters
    ----------
    result : EngineResult
    path : path of the PNG (or any matplotlib format) to write
    signal : hyperspy Signal1D, optional
        The measured spectra, shown for a single spectrum (its counts around the edge).

    Returns
    -------
    Path
    """
    nav = result.occupied.axes_manager.navigation_dimension
    if nav == 0:
        return _plot_single(result, path, signal)
    if nav == 1:
        return _plot_line(result, path)
    return _plot_maps(result, path)


def _plot_single(result, path, signal):
    from matplotlib.figure import Figure

    energy = result.occupied.axes_manager.signal_axes[0].axis
    fig = Figure(figsize=(12, 4.8), constrained_layout=True)
    a_in, a_dos = fig.subplots(1, 2)
    peak = _map_value(result, "peak_energy_ev")
    if signal is not None:
        e = np.asarray(signal.axes_manager.signal_axes[0].axis, dtype=float)
        y = np.asarray(signal.data.compute() if hasattr(signal.data, "compute") else signal.data,
                       dtype=float).reshape(-1)
        a_in.plot(e, y, "k-", lw=0.8)
        a_in.set_xlabel("energy loss (eV)")
        a_in.set_ylabel("counts")
        if np.isfinite(peak):
            a_in.axvline(peak, color="C3", lw=0.8, label=f"first peak {peak:.2f} eV")
            a_in.axvspan(peak - 1.0, peak + 15.0, color="C3", alpha=0.1,
                         label="model window (peak -1 to +15 eV)")
            a_in.legend(fontsize=8)
        a_in.set_title(f"measured spectrum ({_map_value(result, 'edge_counts'):.0f} edge counts)")
    else:
        a_in.set_visible(False)
    mean, std = _pixel_curves(result, ())
    _plot_dos(a_dos, energy, mean, std, "predicted site DOS (±σ)")
    text = "\n".join(f"{k}: {_map_value(result, k):.2f}" for k in ("homo_ev", "lumo_ev",
                                                                      "gap_ev", "sigma_rel")
                     if k in result.maps)
    a_dos.text(0.02, 0.97, text, transform=a_dos.transAxes, va="top", fontsize=8,
               family="monospace")
    fig.savefig(path, dpi=110)
    return Path(path)


def _plot_line(result, path):
    from matplotlib.figure import Figure

    energy = result.occupied.axes_manager.signal_axes[0].axis
    ax_x = result.occupied.axes_manager.navigation_axes[0]
    x = np.asarray(ax_x.axis, dtype=float)
    units = str(ax_x.units) if str(ax_x.units) not in ("", "<undefined>") else "px"
    xlabel = f"{ax_x.name if str(ax_x.name) not in ('', '<undefined>') else 'position'} ({units})"
    fig = Figure(figsize=(13, 9), constrained_layout=True)
    axes = fig.subplots(2, 2)
    usable = np.asarray(result.maps["reason"].data) == 0
    # the unoccupied DOS along the scan, as an image (position x energy)
    a = axes[0, 0]
    unocc = np.asarray(result.unoccupied.data, dtype=float)
    step = x[1] - x[0] if x.size > 1 else 1.0
    im = a.imshow(unocc.T, origin="lower", aspect="auto", cmap="viridis",
                  extent=(x[0] - step / 2, x[-1] + step / 2, energy[0], energy[-1]))
    a.set_xlabel(xlabel)
    a.set_ylabel("energy relative to E_F (eV)")
    a.set_title("unoccupied DOS along the scan")
    fig.colorbar(im, ax=a, shrink=0.8)
    # DOS features along the scan
    a = axes[0, 1]
    for name, style in (("homo_ev", "C0.-"), ("lumo_ev", "C3.-"), ("gap_ev", "k.-")):
        if name in result.maps:
            a.plot(x, np.asarray(result.maps[name].data, dtype=float), style, label=name)
    a.set_xlabel(xlabel)
    a.set_ylabel("eV relative to E_F")
    a.set_title("DOS peaks along the scan")
    a.legend(fontsize=8)
    a = axes[1, 0]
    windows = [n for n in result.maps if n.startswith(("occupied_", "unoccupied_"))]
    for i, name in enumerate(windows):
        a.plot(x, np.asarray(result.maps[name].data, dtype=float), f"C{i}.-",
               label=f"DOS fraction in {name}")
    a2 = a.twinx()
    a2.plot(x, np.asarray(result.maps["edge_counts"].data, dtype=float), "k:", lw=1,
            label="edge counts")
    a2.set_ylabel("edge counts")
    if (~usable).any():
        for xi in x[~usable]:
            a.axvspan(xi - step / 2, xi + step / 2, color="gray", alpha=0.2, lw=0)
    a.set_xlabel(xlabel)
    a.set_ylabel("area fraction")
    a.set_title("window fractions and edge counts (grey: masked pixels)")
    a.legend(fontsize=8, loc="upper left")
    a2.legend(fontsize=8, loc="upper right")
    a = axes[1, 1]
    for j, (label, _, idx) in enumerate(_pick_examples(result)):
        mean, std = _pixel_curves(result, idx)
        for c, ls in ((0, "--"), (1, "-")):
            a.plot(energy, mean[c], color=f"C{j}", ls=ls,
                   label=f"{label} {'occupied' if c == 0 else 'unoccupied'}")
            a.fill_between(energy, mean[c] - std[c], mean[c] + std[c], color=f"C{j}",
                           alpha=0.15)
    a.axvline(0, color="gray", lw=0.5)
    a.set_xlabel("energy relative to E_F (eV)")
    a.set_title("predicted site DOS (±σ) of the pixels with most edge counts")
    a.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return Path(path)


def _plot_maps(result, path):
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
