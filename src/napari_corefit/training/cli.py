"""``corefit train``, ``corefit evaluate`` and ``corefit calibrate``."""

from __future__ import annotations

import json
import sys

__all__ = ["add_parser"]


def add_parser(subparsers):
    """Register ``train``, ``evaluate`` and ``calibrate`` on the ``corefit`` sub-command parser."""
    from napari_corefit.model.network import ARCHITECTURES
    from napari_corefit.training.splits import SPLIT_KINDS

    p = subparsers.add_parser(
        "train", help="train a spectrum-to-DOS ensemble on a database",
        description="Train an ensemble (different seeds) on a database built by `corefit db`, "
        "evaluate it on its held-out test molecules and write a checkpoint directory "
        "(model.safetensors + config.json).")
    p.add_argument("--db", required=True, help="database directory (shards)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--level", choices=("site", "molecule"), default="site")
    p.add_argument("--noise", default="inf", metavar="N",
                   help="total edge counts N of the Poisson noise (e.g. 1e4); inf = noise-free "
                   "(default)")
    p.add_argument("--signal-to-background", type=float, default=1.0, metavar="R",
                   help="edge / power-law background counts in the input window (noise only)")
    p.add_argument("--savgol-ev", type=float, default=None, metavar="W",
                   help="Savitzky-Golay smoothing window in eV (part of the preprocessing the "
                   "model is trained for; off by default)")
    p.add_argument("--members", type=int, default=5, help="ensemble members (default 5)")
    p.add_argument("--epochs", type=int, default=3000, help="maximum epochs per member")
    p.add_argument("--patience", type=int, default=100,
                   help="early stopping: epochs without validation improvement")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (paper: 1e-4)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="paper_mlp")
    p.add_argument("--arch-options", default=None, metavar="JSON",
                   help='architecture settings, e.g. \'{"dropout": 0.1}\'')
    p.add_argument("--split", choices=sorted(SPLIT_KINDS), default="random")
    p.add_argument("--spectra", choices=["continuum", "discrete"], default="continuum",
                   help="how sticks become spectra: the realistic recipe with the ionisation "
                        "continuum (default) or the discrete lines of models before 2026-12-08")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is fastest on a busy machine)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop each member after this many minutes (recorded in the model)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="training arithmetic (bfloat16: autocast, ~2x faster on CPUs with "
                        "AVX-512 BF16; weights stay float32)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="keep an exponential moving average of the weights with this decay "
                        "(e.g. 0.999; 0: off)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="cosine: the rate falls from --lr to 1e-5 over --epochs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)

    e = subparsers.add_parser(
        "evaluate", help="score a model against a database",
        description="Predict the DOS of every selected site (or molecule) of a database and "
        "compare with the computed truth.")
    e.add_argument("--model", default=None,
                   help="checkpoint directory (default: the bundled model)")
    e.add_argument("--db", required=True, help="database directory")
    e.add_argument("--split", default="test",
                   choices=("all", "test", "val", "train", "extrapolation"),
                   help="all: every usable site; test: the model's held-out molecules; "
                   "extrapolation: molecules with 21-26 atoms")
    e.add_argument("--level", choices=("site", "molecule"), default=None,
                   help="default: the level the model was trained at")
    e.add_argument("--noise", default=None, metavar="N",
                   help="evaluate at this total count (inf = noise-free); default: the model's")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=_evaluate)

    c = subparsers.add_parser(
        "calibrate", help="fit the ensemble's sigma scale on validation molecules",
        description="Fit one factor per curve (occupied, unoccupied) for the ensemble's "
        "standard deviation so that mean +- 2 sigma holds 95.4 %% of the truth values of the "
        "model's validation molecules, and store it in the checkpoint's config.json (weights "
        "untouched). `corefit train` does this itself; use it for older checkpoints or after "
        "the database has grown.")
    c.add_argument("--model", required=True, help="checkpoint directory to calibrate")
    c.add_argument("--db", required=True, help="database directory")
    c.add_argument("--split", default="val", choices=("val", "all"),
                   help="val: the model's validation molecules (default); all: every site "
                   "(for a database the model never saw)")
    c.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
    c.set_defaults(func=_calibrate)


def _noise_model(text, sbr=1.0):
    from napari_corefit.training.noise import NoiseModel, parse_counts

    return NoiseModel(counts=parse_counts(text), signal_to_background=sbr)


def _train(args):
    from napari_corefit.training.loop import TrainSettings
    from napari_corefit.training.train import train_model

    options = json.loads(args.arch_options) if args.arch_options else None
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             patience=args.patience, seed=args.seed, device=args.device,
                             threads=args.threads, precision=args.precision,
                             ema_decay=args.ema_decay, lr_schedule=args.lr_schedule,
                             max_seconds=None if args.max_minutes is None else
                             60.0 * args.max_minutes)
    from napari_corefit.training.dataset import default_preprocess_config

    pp = default_preprocess_config()
    if args.savgol_ev is not None:
        pp = type(pp).from_dict({**pp.to_dict(), "savgol_window_ev": args.savgol_ev})
    train_model(args.db, args.out, level=args.level, preprocess_config=pp,
                noise=_noise_model(args.noise, args.signal_to_background),
                n_members=args.members, arch=args.arch, arch_options=options, split=args.split,
                seed=args.seed, settings=settings, progress=not args.quiet,
                continuum="default" if args.spectra == "continuum" else None)
    print(f"model written to {args.out}", file=sys.stderr)
    return 0


def _evaluate(args):
    from napari_corefit.backend import load_database
    from napari_corefit.model.checkpoint import load_default, load_model
    from napari_corefit.training.evaluate import evaluate_model
    from napari_corefit.training.noise import NoiseModel

    loaded = load_model(args.model, device=args.device) if args.model else load_default(
        device=args.device)
    table = load_database(args.db)
    noise = None
    if args.noise is not None:
        base = NoiseModel.from_dict(loaded.config.get("noise"))
        noise = _noise_model(args.noise, base.signal_to_background)
    ev = evaluate_model(loaded, table, split=args.split, level=args.level, noise=noise)
    s = ev.summary
    if args.json:
        print(json.dumps(s, sort_keys=True))
        return 0
    print(f"{s['level']}-level, split {s['split']}: {s['n_rows']} rows, {s['n_sites']} sites, "
          f"{s['n_molecules']} molecules, noise {s['noise_counts'] or 'none'}")
    for name in ("occupied", "unoccupied", "total"):
        print(f"  {name:10s} MSE {s[f'mse_{name}']:.4g}  cosine median "
              f"{s[f'cosine_median_{name}']:.3f}  10th percentile {s[f'cosine_p10_{name}']:.3f}")
    print(f"  main peak within 0.5 eV: {s['peak_within_0p5ev_fraction']:.3f}")
    if "calibration_2sigma" in s:
        print(f"  truth inside +-2 sigma: {s['calibration_2sigma']:.3f} (raw ensemble spread: "
              f"{s['calibration_2sigma_raw']:.3f})")
    return 0


def _calibrate(args):
    from napari_corefit.backend import load_database
    from napari_corefit.model.checkpoint import load_model, update_config
    from napari_corefit.training.calibration import calibrate_model

    loaded = load_model(args.model)
    block = calibrate_model(loaded, load_database(args.db), split=args.split)
    block["fitted_on"]["database"] = str(args.db)
    s, b, a = (block[k] for k in ("sigma_scale", "coverage_2sigma_before",
                                  "coverage_2sigma_after"))
    print(f"fitted on {block['fitted_on']['n_rows']} rows of {block['fitted_on']['n_molecules']}"
          f" molecules ({args.split})")
    for c in ("occupied", "unoccupied"):
        print(f"  {c:10s} sigma x {s[c]:.3g}: inside +-2 sigma {b[c]:.3f} -> {a[c]:.3f}")
    if not args.dry_run:
        update_config(args.model, {"uncertainty": block})
        print(f"written to {args.model}/config.json", file=sys.stderr)
    return 0
