"""Measured against simulated C K-edge spectra: the shared gas-phase set (ISEELS, 10 molecules).

For each measured spectrum (``../shared/measured_ck/``, never copied into the repository) and the
backend's simulation of the same molecule (``data/db_measured``, built from
``benchmarks/measured_molecules.smi`` with ``corefit db build`` and ``corefit db ionise``):

- the measured spectrum through the engine's own steps (resampled, resolution matched from the
  listed instrument FWHM to the model's 0.5 eV sigma, first peak found by the engine's detector,
  aligned and area-normalised on the model's input grid; the files are background-free already);
- the simulated molecular spectrum (:func:`napari_corefit.backend.curves.molecule_spectra`),
  discrete lines (the old recipe) and with the continuum (:data:`CONTINUUM`, the default);
- cosine on the whole input window and on the first 5 eV (grid -1 to 5 eV above the first peak);
- the first-peak position against the measured one, and the Delta-SCF IP against gas-phase XPS
  where the set's molecule has a published value here;
- the twin rank: every molecular spectrum of ``data/db`` (8,182 molecules) ranked by cosine to
  the measured spectrum; where does the molecule's own simulation land (1 = nearest)? Its own is
  the database's entry where the database holds the molecule, else the set's simulation
  (``data/db_measured``) added to the ranking.

``--fit`` chooses the :class:`Continuum` parameters by maximising the median cosine over the ten
(whole window and first 5 eV, equally; seeded random starts, then Nelder-Mead), and reports the
leave-one-molecule-out cosine of each molecule (parameters refitted on the other nine) beside it,
so that the fit's optimism shows.

    python benchmarks/bench_measured.py [--shared ../shared/measured_ck] [--fit] [--plot F.png]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: gas-phase XPS C 1s ionisation energies (eV) of the set's molecules with one carbon site
XPS_IP = {"benzene": 290.4, "carbon_monoxide": 296.2}

#: the Continuum fields that --fit varies, with their search ranges
FIT_RANGES = {"step_height": (0.0, 1.0), "step_width_ev": (0.3, 2.5), "sigma_max_ev": (0.5, 6.0),
              "ramp_ev": (1.0, 15.0), "onset_ev": (-4.0, 4.0), "damping": (0.2, 1.0)}


def read_gas_phase(path):
    """Energy (eV) and oscillator strength of a Gas Phase Core Excitation Database file."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("*") or not line.strip():
            continue
        try:
            rows.append([float(p) for p in re.split(r"[,\s]+", line.strip()) if p])
        except ValueError:
            continue
    a = np.array([r for r in rows if len(r) == len(rows[0])])
    e, y = a[:, 0], a[:, -1]  # the last column is the oscillator strength in every layout
    order = np.argsort(e)
    return e[order], y[order]


def read_set(folder):
    """``[(name, smiles, fwhm, energy, osc), ...]`` from the folder's molecules.tsv."""
    folder = Path(folder)
    out = []
    for line in (folder / "molecules.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fname, name, smiles, fwhm = line.split("\t")
        e, y = read_gas_phase(folder / fname)
        out.append((name, smiles, float(fwhm), e, y))
    return out


def measured_inputs(spectra, step=0.05):
    """The engine's steps on each measured spectrum: model-grid inputs and absolute peaks."""
    from napari_corefit.spectra.align import PEAK_SEARCH_EV, align_to_first_peak, first_peak
    from napari_corefit.spectra.grids import SPECTRUM_GRID
    from napari_corefit.spectra.resolution import gaussian_broaden, matching_sigma

    inputs, peaks = [], []
    for _, _, fwhm, e, y in spectra:
        axis = np.arange(e[0], e[-1], step)
        yy = np.interp(axis, e, y)
        yy = gaussian_broaden(yy[None], matching_sigma(fwhm), step)
        peak = first_peak(axis, yy, PEAK_SEARCH_EV)[0]
        inputs.append(align_to_first_peak(axis, yy, np.array([peak]), SPECTRUM_GRID)[0])
        peaks.append(peak)
    return np.array(inputs, np.float64), np.array(peaks)


def cosine(a, b):
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    num = (a * b).sum(-1)
    return num / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-300)


def _windows():
    from napari_corefit.spectra.grids import SPECTRUM_GRID

    g = SPECTRUM_GRID.values
    return {"whole": np.ones(g.size, bool), "first 5 eV": g <= 5.0 + 1e-9}


def simulated(table, keys, continuum):
    """Molecular spectra of ``keys`` (db molecule keys, in order) and their absolute peaks."""
    from napari_corefit.backend.curves import molecule_spectra

    ids, spectra, peaks = molecule_spectra(table, continuum=continuum, return_peaks=True)
    row = {str(table.molecules["key"][m]): i for i, m in enumerate(ids)}
    take = [row[k] for k in keys]
    return spectra[take], peaks[take]


def _match_keys(table, spectra_set):
    from rdkit import Chem

    canon = {}
    for m, smi in enumerate(table.molecules["smiles"]):
        mol = Chem.MolFromSmiles(str(smi))
        if mol is not None:
            canon.setdefault(Chem.MolToSmiles(mol), str(table.molecules["key"][m]))
    keys = []
    for name, smiles, *_ in spectra_set:
        k = canon.get(Chem.MolToSmiles(Chem.MolFromSmiles(smiles)))
        if k is None:
            raise SystemExit(f"{name} ({smiles}) is not in the simulated database")
        keys.append(k)
    return keys


def scores(meas, sim):
    return {w: np.array([cosine(meas[i, m], sim[i, m])[0] for i in range(len(meas))])
            for w, m in _windows().items()}


def objective(meas, sim):
    s = scores(meas, sim)
    return 0.5 * (np.median(s["whole"]) + np.median(s["first 5 eV"]))


def fit(table, keys, meas, start, rows=None, starts=40, maxfev=300, seed=0):
    """Maximise :func:`objective` on ``rows`` over :data:`FIT_RANGES`: the best of ``starts``
    seeded random points (and ``start``), then Nelder-Mead from it (values clipped to the
    ranges). Returns the :class:`Continuum` and its objective."""
    from scipy.optimize import minimize

    rows = np.arange(len(keys)) if rows is None else np.asarray(rows)
    sub_keys = [keys[i] for i in rows]
    names = list(FIT_RANGES)

    def make(v):
        return replace(start, **{n: float(np.clip(x, *FIT_RANGES[n])) for n, x in zip(names, v)})

    def loss(v):
        return -objective(meas[rows], simulated(table, sub_keys, make(v))[0])

    rng = np.random.default_rng(seed)
    points = [[getattr(start, n) for n in names]]
    points += [[rng.uniform(*FIT_RANGES[n]) for n in names] for _ in range(starts)]
    vals = [loss(v) for v in points]
    best = points[int(np.argmin(vals))]
    res = minimize(loss, best, method="Nelder-Mead",
                   options={"maxfev": maxfev, "xatol": 0.01, "fatol": 1e-5})
    return make(res.x), -float(res.fun)


def twin_ranks(db_table, keys, meas, own, continuum, smiles):
    """Rank of each molecule's own simulation among every ``db_table`` molecule's (cosine).

    The own simulation is the database's entry of the molecule where it holds one (the same
    geometry source and recipe as every competitor), else the measured set's simulation
    (``own``, from ``data/db_measured``) added to the pool. Returns the ranks per window and
    where each twin came from."""
    from napari_corefit.backend.curves import molecule_spectra

    ids, pool = molecule_spectra(db_table, continuum=continuum)
    pool_keys = [str(db_table.molecules["key"][m]) for m in ids]
    in_db = _canonical_keys(db_table, smiles)
    row = {k: i for i, k in enumerate(pool_keys)}
    out = {"source": [in_db[i] or "db_measured" for i in range(len(keys))]}
    for w, m in _windows().items():
        ranks = []
        for i in range(len(keys)):
            c_pool = cosine(meas[i, m][None], pool[:, m])
            if in_db[i] is not None:
                c_own = c_pool[row[in_db[i]]]
            else:
                c_own = cosine(meas[i, m], own[i, m])[0]
            ranks.append(1 + int((c_pool > c_own).sum()))
        out[w] = np.array(ranks)
    return out


def _canonical_keys(table, smiles_list):
    """The table's molecule key of each SMILES (RDKit canonical form), or None."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    canon = {}
    for m, smi in enumerate(table.molecules["smiles"]):
        mol = Chem.MolFromSmiles(str(smi))
        if mol is not None:
            canon.setdefault(Chem.MolToSmiles(mol), str(table.molecules["key"][m]))
    return [canon.get(Chem.MolToSmiles(Chem.MolFromSmiles(s))) for s in smiles_list]


def score_model(model_dir, level, table, keys, names, meas, mean_dos=None):
    """A model on the measured set: measured -> DOS and the molecule's own simulated spectrum
    (with the model's own recipe) -> DOS, each against the backend's ground-state molecular DOS
    (cosine per channel), beside the average training DOS (``mean_dos``, when given)."""
    from napari_corefit.backend.curves import molecule_dos
    from napari_corefit.model.checkpoint import load_default, load_model
    from napari_corefit.model.inference import predict_spectra
    from napari_corefit.training.evaluate import spectra_recipe

    model = load_default(level=level) if model_dir == "default" else load_model(model_dir)
    ids, dos = molecule_dos(table)
    row = {str(table.molecules["key"][m]): i for i, m in enumerate(ids)}
    truth = dos[[row[k] for k in keys]]
    sim = simulated(table, keys, spectra_recipe(model.config))[0]
    out = {}
    for lab, x in (("measured", meas), ("simulated", sim)):
        pred, _ = predict_spectra(model, x.astype(np.float32), device="cpu")
        out[lab] = np.stack([cosine(pred[:, c], truth[:, c]) for c in (0, 1)], axis=1)
    if mean_dos is not None:
        out["average DOS"] = np.stack([cosine(mean_dos[None, c], truth[:, c]) for c in (0, 1)],
                                      axis=1)
    print(f"\nModel {model_dir} ({level} level, trained on "
          f"{'discrete lines' if spectra_recipe(model.config) is None else 'the continuum'}): "
          "DOS cosine occupied / unoccupied against the backend's molecular DOS")
    print(f"{'molecule':>16}" + "".join(f" {lab:>17}" for lab in out))
    for i, name in enumerate(names):
        print(f"{name:>16}" + "".join(f"    {v[i, 0]:.3f} / {v[i, 1]:.3f}" for v in out.values()))
    print(f"{'median':>16}" + "".join(f"    {np.median(v[:, 0]):.3f} / {np.median(v[:, 1]):.3f}"
                                       for v in out.values()))
    return out


def plot(path, spectra_set, meas, sims, labels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_corefit.spectra.grids import SPECTRUM_GRID

    n = len(spectra_set)
    fig, axes = plt.subplots(2, (n + 1) // 2, figsize=(3.2 * ((n + 1) // 2), 6.0), sharex=True)
    for ax, i in zip(axes.ravel(), range(n)):
        ax.plot(SPECTRUM_GRID.values, meas[i], color="black", lw=1.5, label="measured")
        for sim, lab, col in zip(sims, labels, ("0.6", "C3")):
            ax.plot(SPECTRUM_GRID.values, sim[i], color=col, lw=1.0, label=lab)
        ax.set_title(spectra_set[i][0].replace("_", " "), fontsize=9)
        ax.set_xlabel("energy above first peak (eV)")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    axes.ravel()[0].set_ylabel("intensity (area-normalised, 1/eV)")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle("C K edge, gas phase: measured (ISEELS, Hitchcock & Mancini) against the "
                 "backend's simulation", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    import warnings

    from napari_corefit.backend.curves import CONTINUUM, DISCRETE
    from napari_corefit.backend.storage import load_database

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "measured_ck")
    ap.add_argument("--sim-db", type=Path, default=ROOT / "data" / "db_measured")
    ap.add_argument("--db", type=Path, default=ROOT / "data" / "db",
                    help="the database whose molecules the twin rank ranks")
    ap.add_argument("--fit", action="store_true", help="fit the Continuum parameters (and LOO)")
    ap.add_argument("--no-rank", action="store_true", help="skip the twin rank (minutes)")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--model", action="append", default=[], metavar="DIR",
                    help="score a model on the set (measured -> DOS; 'default' for the bundled "
                         "one); may be given more than once")
    ap.add_argument("--level", default="molecule", choices=["site", "molecule"],
                    help="level of the bundled model scored by --model default")
    args = ap.parse_args(argv)
    if not (args.shared / "molecules.tsv").exists():
        print(f"bench_measured: no measured set at {args.shared}: skipped")
        return 0
    t0 = time.time()
    spectra_set = read_set(args.shared)
    meas, meas_peaks = measured_inputs(spectra_set)
    table = load_database(args.sim_db)
    keys = _match_keys(table, spectra_set)
    names = [s[0] for s in spectra_set]
    recipes = {"discrete": DISCRETE, "continuum": CONTINUUM}
    if args.fit:
        fitted, val = fit(table, keys, meas, CONTINUUM)
        print(f"fitted on all ten: objective {val:.4f}\n  {fitted}")
        loo = np.zeros(len(keys))
        loo5 = np.zeros(len(keys))
        for i in range(len(keys)):
            rest = [j for j in range(len(keys)) if j != i]
            p, _ = fit(table, keys, meas, fitted, rows=rest, starts=0, maxfev=150)
            sim_i = simulated(table, [keys[i]], p)[0]
            s = scores(meas[[i]], sim_i)
            loo[i], loo5[i] = s["whole"][0], s["first 5 eV"][0]
        recipes["fitted"] = fitted
    results = {}
    for lab, c in recipes.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim, peaks = simulated(table, keys, c)
        results[lab] = (sim, peaks, scores(meas, sim))
    ip = {}
    for k, name in zip(keys, names):
        sel = np.flatnonzero(table.molecules["key"] == k)[0]
        s = np.flatnonzero(table.sites["molecule"] == sel)
        ip[name] = table.sites["ionisation_energy"][s]
    print(f"\nMeasured against simulated molecular spectra ({len(names)} molecules; cosine on the "
          "model's input window, whole / first 5 eV)")
    head = f"{'molecule':>16}" + "".join(f" {lab:>17}" for lab in results)
    if args.fit:
        head += f" {'LOO (fitted)':>17}"
    head += f" {'peak meas':>9} {'sim-meas':>8} {'IP (DSCF)':>16} {'XPS':>6}"
    print(head)
    for i, name in enumerate(names):
        line = f"{name:>16}"
        for lab, (sim, peaks, sc) in results.items():
            line += f"    {sc['whole'][i]:.3f} / {sc['first 5 eV'][i]:.3f}"
        if args.fit:
            line += f"    {loo[i]:.3f} / {loo5[i]:.3f}"
        sim_peak = results["continuum"][1][i]
        ips = ip[name][np.isfinite(ip[name])]
        ip_text = (f"{ips.min():.2f}-{ips.max():.2f}" if ips.size > 1 else
                   f"{ips[0]:.2f}" if ips.size else "missing")
        line += (f" {meas_peaks[i]:9.2f} {sim_peak - meas_peaks[i]:+8.2f} {ip_text:>16} "
                 f"{XPS_IP.get(name, float('nan')):6.1f}")
        print(line)
    line = f"{'median':>16}"
    for lab, (sim, peaks, sc) in results.items():
        line += f"    {np.median(sc['whole']):.3f} / {np.median(sc['first 5 eV']):.3f}"
    if args.fit:
        line += f"    {np.median(loo):.3f} / {np.median(loo5):.3f}"
    print(line)
    regions = {"first peak (-1-1 eV)": (-1.0, 1.0), "bound states (1-5 eV)": (1.0, 5.0),
               "continuum (5-15 eV)": (5.0, 15.0)}
    from napari_corefit.spectra.grids import SPECTRUM_GRID

    g = SPECTRUM_GRID.values
    sim = results["fitted" if args.fit else "continuum"][0]
    print("\nWhere measured and simulated (continuum) differ: the share of the squared difference "
          "in each region, and the simulated/measured area of the first peak region")
    print(f"{'molecule':>16}" + "".join(f" {r:>22}" for r in regions) + f" {'peak area s/m':>14}")
    for i, name in enumerate(names):
        d2 = (sim[i] - meas[i]) ** 2
        shares = [d2[(g >= lo) & (g < hi)].sum() / d2.sum() for lo, hi in regions.values()]
        first = (g >= -1.0) & (g < 1.0)
        ratio = sim[i, first].sum() / meas[i, first].sum()
        print(f"{name:>16}" + "".join(f" {v:22.2f}" for v in shares) + f" {ratio:14.2f}")
    if not args.no_rank:
        db = load_database(args.db)
        print(f"\nTwin rank among {db.n_molecules} molecules of {args.db} (+ the molecule's own "
              "simulation; 1 = nearest), whole window / first 5 eV")
        for lab, c in recipes.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = twin_ranks(db, keys, meas, results[lab][0], c, [x[1] for x in spectra_set])
            per = "  ".join(f"{n[:10]} {a}/{b}" for n, a, b in zip(names, r["whole"],
                                                                    r["first 5 eV"]))
            if lab == "discrete":
                print("  twins: " + ", ".join(f"{n} {src}" for n, src in zip(names, r["source"])))
            print(f"{lab:>10}: median {np.median(r['whole']):.0f} / "
                  f"{np.median(r['first 5 eV']):.0f}   ({per})", flush=True)
    for model_dir in args.model:
        score_model(model_dir, args.level, table, keys, names, meas)
    if args.plot:
        labs = [lab for lab in ("discrete", "fitted" if args.fit else "continuum")]
        plot(args.plot, spectra_set, meas, [results[lab][0] for lab in labs], labs)
        print(f"figure: {args.plot}")
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
