"""End-to-end accuracy on synthetic samples: atoms found, per-atom DOS against the truth, by dose.

    python benchmarks/bench_end_to_end.py                       # bundled model, data/db or tiny
    python benchmarks/bench_end_to_end.py --model DIR --db DIR --doses 300,3000,30000
    python benchmarks/bench_end_to_end.py --write-md benchmarks/results_end_to_end.md \\
        --plot benchmarks/results_end_to_end.png

For every dose (carbon K-edge counts per carbon atom) and layout seed, a sample is generated
from the database (:func:`napari_corefit.sample_data.generate.make_sample`), written as the
shipped sample is, and run through the whole chain as ``corefit predict --atoms`` runs it
(:func:`napari_corefit.engine.predict`: read -> preprocess -> atom columns -> model -> per-atom
DOS). Scored (:func:`napari_corefit.sample_data.score.score_result`): heavy-atom recall and
precision, and for every carbon column found and not masked, the cosine similarity of the
predicted occupied and unoccupied DOS to its site's ground-state DOS. The "ceiling" row is the
same model on the noise-free site spectra of the same carbons (no image, no background, no
noise): what the chain could give at infinite dose.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _default_db():
    from napari_corefit.backend import load_database

    db = ROOT / "data" / "db"
    try:
        if load_database(db).n_molecules >= 14:
            return db
    except (FileNotFoundError, OSError, ValueError):
        pass
    return Path("/work/cache/tiny_db")


def _model(path, table, train_epochs, out_dir):
    from napari_corefit.model import load_default, load_model

    if path:
        return load_model(path), f"`{path}`"
    if not train_epochs:
        return load_default(), "bundled (`napari_corefit.model.load_default()`)"
    return train_tiny(table, out_dir / "model", train_epochs), (
        f"tiny: 2 members trained here for {train_epochs} epochs, noise-free, on every site of "
        "the database (the sample's molecules are all in training)")


def train_tiny(table, out, epochs):
    """A small noise-free ensemble trained on every site (as tests/test_end_to_end.py does)."""
    import torch

    from napari_corefit.model.checkpoint import fit_ood, load_model, save_model
    from napari_corefit.model.network import default_arch
    from napari_corefit.spectra.grids import DOS_GRID, SPECTRUM_GRID
    from napari_corefit.training.dataset import (build_curves, default_preprocess_config,
                                                 make_inputs)
    from napari_corefit.training.loop import TrainSettings, train_ensemble

    torch.manual_seed(0)
    rows = build_curves(table, level="site")
    pp = default_preprocess_config()
    arch = default_arch("paper_mlp", SPECTRUM_GRID.n, DOS_GRID.n)
    settings = TrainSettings(epochs=epochs, lr=1e-3, batch_size=8, patience=epochs,
                             device="cpu", threads=1)
    ens, _ = train_ensemble(arch, rows, rows, settings, n_members=2, preprocess_config=pp,
                            progress=False)
    x, ok = make_inputs(rows, None, pp, np.random.default_rng(0))
    save_model(out, ens, {"arch": arch, "input_grid": SPECTRUM_GRID.to_dict(),
                          "output_grid": DOS_GRID.to_dict(), "preprocess": pp.to_dict(),
                          "noise_counts": None}, ood=fit_ood(x[ok]))
    return load_model(out)


def ceiling(model, table, truth):
    """Cosines of the model on the noise-free site spectra of the sample's carbons."""
    from napari_corefit.backend.curves import site_spectra
    from napari_corefit.model.inference import predict_spectra
    from napari_corefit.sample_data.score import cosine

    sites = truth["site"][truth["carbon"]]
    from napari_corefit.training.evaluate import spectra_recipe

    # the model's own recipe: discrete lines for models trained before the continuum
    x = site_spectra(table, continuum=spectra_recipe(model.config))[sites].astype(np.float32)
    mean, _ = predict_spectra(model, x, device="cpu")
    return cosine(mean[:, 0], truth["dos"][:, 0]), cosine(mean[:, 1], truth["dos"][:, 1])


def plot_examples(truth, result, table, path, dose, n=4):
    """True against predicted DOS of ``n`` carbon columns of distinct sites."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_corefit.sample_data.score import match_atoms
    from napari_corefit.spectra.grids import DOS_GRID

    t = result.atoms_table
    c_yx = np.c_[truth["y_nm"], truth["x_nm"]][truth["carbon"]]
    pairs = match_atoms(c_yx, np.c_[t["y_nm"], t["x_nm"]], 0.05)
    seen, chosen = set(), []
    for k, f in pairs:
        site = int(truth["site"][truth["carbon"][k]])
        if site not in seen and t["usable"].iloc[f]:
            seen.add(site)
            chosen.append((k, f))
    chosen = chosen[:n]
    e = DOS_GRID.values
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 2.8), squeeze=False)
    for ax, (k, f) in zip(axes[0], chosen):
        a = truth["carbon"][k]
        for c, colour, label in ((0, "tab:blue", "occupied"), (1, "tab:red", "unoccupied")):
            ax.plot(e, truth["dos"][k, c], color=colour, lw=2, alpha=0.4, label=f"true {label}")
            ax.plot(e, result.atoms_mean[f, c], color=colour, lw=1, label=f"predicted {label}")
        ax.set_title(f"{truth['smiles'][a]} atom {truth['atom_index'][a]}", fontsize=9)
        ax.set_xlabel("energy relative to E_F (eV)")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"per-atom site DOS from the synthetic SI (dose {dose:g} counts per carbon)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def held_out_molecules(model, table):
    """Indices of the model's test molecules in ``table`` (its split, rebuilt from its config),
    or None when the model records no split (e.g. the tiny model trained on everything)."""
    from napari_corefit.training.splits import split_from_dict

    split = (getattr(model, "config", None) or {}).get("split")
    if not split:
        return None
    keys = np.asarray(table.molecules["key"]).astype(str)
    return split_from_dict(split, keys, np.asarray(table.molecules["n_atoms"])).test


def run(db, model, table, doses, seeds, size, min_distance, work, plot=None, molecules=None):
    from napari_corefit import engine
    from napari_corefit.sample_data import read_truth, write_sample
    from napari_corefit.sample_data.generate import SampleSettings, make_sample
    from napari_corefit.sample_data.score import cosine, score_result
    from napari_corefit.training.evaluate import spectra_recipe

    # samples made with the recipe the model was trained on (the continuum for new models)
    recipe = spectra_recipe(model.config)
    rows = []
    for dose in doses:
        acc = {"recall": [], "precision": [], "n_true": 0, "n_carbon": 0, "scored": 0,
               "cos_o": [], "cos_u": [], "edge": [], "seconds": 0.0, "ceil_o": [], "ceil_u": [],
               "base_o": [], "base_u": [], "inside": []}
        for seed in seeds:
            si, adf = make_sample(table, SampleSettings(size=size, dose=dose,
                                                        continuum=recipe), seed=seed,
                                  molecules=molecules, db_path=str(db))
            path = write_sample(work / f"s_{dose:g}_{seed}.hspy", si, adf)
            t0 = time.perf_counter()
            res = engine.predict(str(path), model, atoms=True, device="cpu",
                                 atom_options={"min_distance": min_distance})
            acc["seconds"] += time.perf_counter() - t0
            truth = read_truth(path)
            s = score_result(truth, res)
            acc["recall"].append(s["recall"])
            acc["precision"].append(s["precision"])
            acc["n_true"] += s["n_true"]
            acc["n_carbon"] += s["n_carbon"]
            acc["scored"] += s["n_carbon_scored"]
            acc["cos_o"].extend(s["cosine_occupied"])
            acc["cos_u"].extend(s["cosine_unoccupied"])
            acc["inside"].extend(s["inside_2sigma"])
            acc["edge"].append(s["edge_counts_median"])
            co, cu = ceiling(model, table, truth)
            acc["ceil_o"].extend(co)
            acc["ceil_u"].extend(cu)
            mean = truth["dos"].mean(0)
            acc["base_o"].extend(cosine(mean[0], truth["dos"][:, 0]))
            acc["base_u"].extend(cosine(mean[1], truth["dos"][:, 1]))
            path.unlink()
            if plot and seed == seeds[0] and dose == plot[1]:
                plot_examples(truth, res, table, plot[0], dose)
        rows.append((dose, acc))
        print(_row(dose, acc), flush=True)
    return rows


def _q(v, q):
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.quantile(v, q)) if v.size else float("nan")


HEADER = ("| dose (counts / C atom) | engine N per C column (median) | heavy atoms | recall "
          "(min over seeds) | precision (min) | C columns scored | cosine occupied: median "
          "(25 %) | cosine unoccupied: median (25 %) | truth inside ±2σ | s per SI |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def _row(dose, a):
    return (f"| {dose:g} | {np.nanmedian(a['edge']):.0f} | {a['n_true']} | "
            f"{min(a['recall']):.3f} | {min(a['precision']):.3f} | "
            f"{a['scored']} / {a['n_carbon']} | "
            f"{_q(a['cos_o'], .5):.3f} ({_q(a['cos_o'], .25):.3f})"
            f" | {_q(a['cos_u'], .5):.3f} ({_q(a['cos_u'], .25):.3f}) | "
            f"{np.nanmean(a['inside']) if a['inside'] else float('nan'):.3f} | "
            f"{a['seconds'] / len(a['recall']):.1f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", default=None, help="database (default: data/db when it holds >= 14 "
                   "molecules, else /work/cache/tiny_db)")
    p.add_argument("--model", default=None, help="model directory (default: bundled)")
    p.add_argument("--train-tiny", type=int, default=0, metavar="EPOCHS",
                   help="train a tiny model on --db instead of the bundled one")
    p.add_argument("--doses", default="100,300,1000,3000,10000,30000,100000")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--min-distance", type=int, default=None,
                   help="atom finder's minimum separation, px (default: the engine's choice, "
                   "as corefit predict --atoms makes it)")
    p.add_argument("--molecules", choices=("test", "all"), default="test",
                   help="place only the model's held-out test molecules (default; all molecules "
                   "when the model has no split) or every molecule of the database")
    p.add_argument("--title", default=None, help="section title (with --append)")
    p.add_argument("--append", action="store_true",
                   help="add a section to --write-md instead of replacing the file")
    p.add_argument("--write-md", default=None, metavar="FILE.md")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="true and predicted DOS of a few atoms (first seed, --plot-dose)")
    p.add_argument("--plot-dose", type=float, default=10000,
                   help="dose of the plotted layout; the nearest of --doses (log scale) is used")
    args = p.parse_args(argv)

    from napari_corefit.backend import load_database

    db = Path(args.db) if args.db else _default_db()
    table = load_database(db)
    work = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    model, model_desc = _model(args.model, table, args.train_tiny, work)
    doses = [float(d) for d in args.doses.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    # a plot dose that is not run would leave the markdown pointing at a stale figure
    args.plot_dose = min(doses, key=lambda d: abs(np.log(d / args.plot_dose)))
    print(f"database {db}: {table}; model {model_desc}")
    print(HEADER)
    t0 = time.perf_counter()
    molecules = held_out_molecules(model, table) if args.molecules == "test" else None
    if molecules is not None:
        from napari_corefit.sample_data.generate import usable_molecules

        molecules = np.intersect1d(molecules, usable_molecules(table))
    which = ("every molecule of the database" if molecules is None else
             f"only the model's {len(molecules)} held-out test molecules (never trained on)")
    print(f"placing {which}")
    rows = run(db, model, table, doses, seeds, args.size, args.min_distance, work,
               plot=(args.plot, args.plot_dose) if args.plot else None, molecules=molecules)
    ceil_o = rows[-1][1]["ceil_o"]
    ceil_u = rows[-1][1]["ceil_u"]
    ceiling_line = (f"| ceiling (noise-free site spectra, no image) | - | - | - | - | "
                    f"{len(ceil_o)} | {_q(ceil_o, .5):.3f} ({_q(ceil_o, .25):.3f}) | "
                    f"{_q(ceil_u, .5):.3f} ({_q(ceil_u, .25):.3f}) | - | - |")
    base_o, base_u = rows[-1][1]["base_o"], rows[-1][1]["base_u"]
    baseline_line = (f"| baseline: every carbon given the sample's mean true DOS | - | - | - | - "
                     f"| {len(base_o)} | {_q(base_o, .5):.3f} ({_q(base_o, .25):.3f}) | "
                     f"{_q(base_u, .5):.3f} ({_q(base_u, .25):.3f}) | - | - |")
    print(ceiling_line)
    print(baseline_line)
    if args.write_md:
        cfg = getattr(model, "config", {}) or {}
        md_distance = (f"`min_distance={args.min_distance}` px" if args.min_distance else
                       "the engine's default minimum separation (as `corefit predict --atoms`)")
        head = (["# End-to-end accuracy on synthetic samples (benchmarks/bench_end_to_end.py)",
                 ""] if not args.append else [])
        lines = [
            *head,
            *([f"## {args.title}", ""] if args.title else []),
            f"Command: `python benchmarks/bench_end_to_end.py {shlex.join(argv or sys.argv[1:])}`",
            f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
            f"{platform.node()} ({platform.processor() or platform.machine()}), "
            f"{time.perf_counter() - t0:.0f} s.",
            "",
            f"- Database: `{db}` ({table.n_molecules} molecules, {table.n_sites} sites).",
            f"- Model: {model_desc}; training noise N = {cfg.get('noise_counts')}; "
            f"commit {cfg.get('commit')}; trained on database "
            f"{json.dumps((cfg.get('database') or {}).get('path'))}.",
            f"- Samples: {args.size} x {args.size} px of 0.02 nm, probe FWHM 0.06 nm, "
            "250-330 eV in 0.2 eV channels, S/B 1 near a carbon, random molecule layout "
            f"(`make_sample`, seeds {args.seeds}: {len(seeds)} layouts per dose) of {which}; "
            f"atom finding with {md_distance}.",
            "- Dose: carbon K-edge counts of one carbon atom over the energy axis (the engine's "
            "N of an atom column is 0.7-0.8 of it: its input window and Voronoi cell).",
            "- Heavy atoms (C, N, O, F) are the truth for recall/precision (H is below the "
            "finder's threshold and has no carbon edge). A column within 0.05 nm of an atom "
            "finds it (one-to-one). Cosines: per carbon column found and not masked by the "
            "engine (low counts); median and 25th percentile over all layouts.",
            "",
            HEADER,
            *[_row(d, a) for d, a in rows],
            ceiling_line,
            baseline_line,
            "",
            *([f"Examples (first layout, dose {args.plot_dose:g}): "
               f"![true and predicted DOS]({Path(args.plot).name})", ""] if args.plot else []),
            "The ceiling row is the model alone on noise-free site spectra: the gap between it "
            "and a dose row is what the image, background and noise cost. The baseline row is "
            "what predicting one average carbon DOS for every atom would score: a model is "
            "only telling sites apart where it is above that. 'Truth inside ±2σ' is the share "
            "of the true DOS points (both curves, all scored carbons) inside the engine's "
            "prediction ± 2σ with the model's calibrated σ (95 % on clean validation spectra): "
            "it shows whether the σ also covers what noise and the image add.",
            "",
        ]
        text = "\n".join(lines)
        if args.append and Path(args.write_md).exists():
            text = Path(args.write_md).read_text() + "\n" + text
        Path(args.write_md).write_text(text)
        print(f"wrote {args.write_md}")


if __name__ == "__main__":
    main()
