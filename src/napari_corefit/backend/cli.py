"""``corefit db ...`` and ``corefit compute``: the backend from the command line."""

from __future__ import annotations

import json
import signal
import time
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_parser"]


def _range(text):
    lo, _, hi = text.partition("-")
    return int(lo), int(hi or lo)


def add_parser(sub):
    db = sub.add_parser("db", help="build, inspect and export the training database")
    dbsub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND")

    b = dbsub.add_parser("build", help="compute molecules into a database directory")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--source", choices=["qm9"], help="molecule source")
    src.add_argument("--smiles", type=Path, help="file with one SMILES per line (optional name)")
    src.add_argument("--xyz", type=Path, help="directory of .xyz files, or one XYZ bundle file")
    b.add_argument("--min-heavy", type=int)
    b.add_argument("--max-heavy", type=int)
    b.add_argument("--min-atoms", type=int)
    b.add_argument("--max-atoms", type=int)
    b.add_argument("--ids", type=_range, metavar="I-J", help="QM9 index range (inclusive)")
    b.add_argument("--sample", type=int, help="random sample of this many molecules")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--limit", type=int, help="at most this many molecules")
    b.add_argument("--skip-held-by", type=Path, action="append", default=[], metavar="OTHER_DB",
                   help="leave out the molecules that the finished shards of OTHER_DB hold "
                        "(e.g. new molecules before those an older recipe has computed); "
                        "may be given more than once")
    b.add_argument("-o", "--output", type=Path, required=True, help="database directory")
    b.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    b.add_argument("--threads", type=int, help="threads per worker")
    b.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786)")
    b.add_argument("--timeout", type=float, default=1800,
                   help="CPU seconds per molecule and thread (time the machine was suspended "
                        "or busy with other work does not count)")
    b.add_argument("--deadline", type=float, help="stop starting molecules after this many s")
    b.add_argument("--flush", action="store_true",
                   help="write shard parts from all journals at the end (before a commit)")
    b.add_argument("--recipe", type=Path, help="JSON file overriding recipe fields")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=_build)

    i = dbsub.add_parser("info", help="summarise a database (or list its sites as JSON)")
    i.add_argument("db", type=Path)
    i.add_argument("--json", action="store_true", help="one JSON object per site on stdout")
    i.set_defaults(func=_info)

    f = dbsub.add_parser("flush", help="turn journals of unfinished shards into shard parts")
    f.add_argument("db", type=Path)
    f.set_defaults(func=_flush)

    g = dbsub.add_parser("forget", help="take molecules out of the finished shards, so that "
                         "the next build computes them again")
    g.add_argument("db", type=Path)
    g.add_argument("--failed", action="store_true", help="molecules with a failed site")
    g.add_argument("--stage", nargs="+", default=[], metavar="STAGE",
                   help="molecules with a site converged by one of these solver stages")
    g.add_argument("--below", type=float, metavar="EV",
                   help="molecules with a site whose excitation energy is below this")
    g.add_argument("--keys", nargs="+", default=[], help="these molecule keys (qm9:000343)")
    g.add_argument("--in", dest="held_by", type=Path, metavar="OTHER_DB",
                   help="molecules that the finished shards of OTHER_DB hold (e.g. the records "
                        "of an older recipe that a newer database has computed again)")
    g.add_argument("--dry-run", action="store_true", help="only list what would be forgotten")
    g.set_defaults(func=_forget)

    u = dbsub.add_parser("upgrade", help="rewrite the finished shard parts of older formats in "
                         "the current one (restart running builds first)")
    u.add_argument("db", type=Path)
    u.set_defaults(func=_upgrade)

    m = dbsub.add_parser("merge", help="copy the shards of several databases into one")
    m.add_argument("sources", type=Path, nargs="+")
    m.add_argument("-o", "--output", type=Path, required=True)
    m.set_defaults(func=_merge)

    e = dbsub.add_parser("export", help="broadened curves on grids as .npz")
    e.add_argument("db", type=Path)
    e.add_argument("--grid", choices=["model", "absolute"], default="model",
                   help="model: spectra on the first-peak grid; absolute: on 280-310 eV")
    e.add_argument("-o", "--output", type=Path, required=True)
    e.set_defaults(func=_export)

    x = dbsub.add_parser("xyz-bundle", help="write a QM9 selection as one XYZ bundle file "
                         "(to carry to a build machine without qm9pack)")
    x.add_argument("--min-heavy", type=int)
    x.add_argument("--max-heavy", type=int)
    x.add_argument("--ids", type=_range)
    x.add_argument("--sample", type=int)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--skip-held-by", type=Path, action="append", default=[], metavar="DB",
                   help="leave out the molecules that the finished shards of DB hold (those "
                        "already computed here); may be given more than once")
    x.add_argument("--limit", type=int, help="at most this many molecules (after --skip-held-by)")
    x.add_argument("--largest-first", action="store_true",
                   help="order by carbon count, largest first (for deadline-bounded builds)")
    x.add_argument("-o", "--output", type=Path, required=True)
    x.set_defaults(func=_bundle)
    n = dbsub.add_parser("ionise", help="add C 1s ionisation energies to a database's sites "
                                        "(Delta-SCF pass, resumable; then --estimate the rest)")
    n.add_argument("db", type=Path)
    n.add_argument("--limit", type=int, help="at most this many new Delta-SCF sites")
    n.add_argument("--seed", type=int, default=0, help="order of the molecules")
    n.add_argument("--max-atoms", type=int, help="skip larger molecules")
    n.add_argument("--min-atoms", type=int, help="skip smaller molecules")
    n.add_argument("--deadline", type=float, help="start no site after this many seconds")
    n.add_argument("--flush", action="store_true",
                   help="write the journal as an immutable part at the end (before a commit)")
    n.add_argument("--estimate", action="store_true",
                   help="no Delta-SCF: fit the estimator on the Delta-SCF sites (measured on "
                        "held-out molecules) and write estimates for every site")
    n.add_argument("--quiet", action="store_true")
    n.set_defaults(func=_ionise)
    db.set_defaults(func=lambda args: db.print_help())

    c = sub.add_parser("compute", help="one molecule (SMILES or .xyz): spectra and site DOS")
    c.add_argument("molecule", help="SMILES string or path to an .xyz file")
    c.add_argument("--plot", type=Path, help="save a figure (PNG)")
    c.add_argument("--json", action="store_true", help="site records as JSON on stdout")
    c.set_defaults(func=_compute)


def _molecules(args):
    from napari_corefit.backend import molecules as mm

    if args.source == "qm9":
        return mm.qm9_molecules(ids=args.ids, min_heavy=args.min_heavy,
                                max_heavy=args.max_heavy, min_atoms=args.min_atoms,
                                max_atoms=args.max_atoms, sample=args.sample, seed=args.seed,
                                limit=args.limit)
    if args.smiles:
        mols = mm.read_smiles_file(args.smiles)
    elif args.xyz.is_dir():
        mols = [mm.read_xyz(p) for p in sorted(args.xyz.glob("*.xyz"))]
    else:
        mols = mm.read_xyz_bundle(args.xyz)
    keep = [m for m in mols if (args.min_heavy is None or m.n_heavy >= args.min_heavy)
            and (args.max_heavy is None or m.n_heavy <= args.max_heavy)
            and (args.min_atoms is None or m.n_atoms >= args.min_atoms)
            and (args.max_atoms is None or m.n_atoms <= args.max_atoms)]
    if args.sample is not None and args.sample < len(keep):
        rng = np.random.default_rng(args.seed)
        keep = [keep[i] for i in sorted(rng.choice(len(keep), args.sample, replace=False))]
    return keep[: args.limit] if args.limit else keep


def _interrupt(signum, frame):
    from napari_corefit.backend.runner import STOP

    STOP.set()  # for the pool loop, should the exception below be swallowed (runner.STOP)
    raise KeyboardInterrupt


def _skip_held(mols, other_dbs, who):
    """The molecules that none of the finished shards of ``other_dbs`` hold."""
    if not other_dbs:
        return mols
    from napari_corefit.backend.storage import finished_keys

    held = set()
    for other in other_dbs:
        if not other.is_dir():
            raise SystemExit(f"{who}: no database at {other}")
        held |= finished_keys(other)
    kept = [m for m in mols if m.key not in held]
    print(f"{who}: {len(mols) - len(kept)} of {len(mols)} selected molecules are held by "
          f"{', '.join(map(str, other_dbs))}: left out", file=sys.stderr)
    return kept


def _build(args):
    from napari_corefit.backend.recipe import Recipe
    from napari_corefit.backend.runner import build_database

    recipe = Recipe.from_dict(json.loads(args.recipe.read_text())) if args.recipe else Recipe()
    # `kill PID` stops a build like Ctrl-C: the workers are stopped with it, not orphaned. SIGINT
    # too, explicitly: a shell starting the build in the background (`... &`) ignores it
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    mols = _molecules(args)
    mols = _skip_held(mols, args.skip_held_by, "corefit db build")
    print(f"corefit db build: {len(mols)} molecules, "
          f"{sum(len(m.carbons) for m in mols)} carbons -> {args.output}", file=sys.stderr)
    stats = build_database(mols, args.output, recipe, workers=args.workers,
                           threads=args.threads, timeout=args.timeout, scheduler=args.scheduler,
                           deadline=args.deadline, flush_at_end=args.flush,
                           progress=not args.quiet)
    print(json.dumps({k: v for k, v in stats.items() if k != "shards"}
                     | {"shards_written": len(stats["shards"])}), file=sys.stderr)
    return 0


def _info(args):
    from napari_corefit.backend.storage import journal_keys, load_database

    table = load_database(args.db)
    if args.json:
        from napari_corefit.backend.storage import site_rows

        for row in site_rows(table):
            print(json.dumps(row))
        return 0
    s = table.sites
    ok = s["ok"]
    size = sum(Path(p).stat().st_size for p in table.shards)
    print(f"database {args.db}: {len(table.shards)} shards, {size / 1e6:.2f} MB")
    print(f"  molecules {table.n_molecules}, sites {table.n_sites} ({int(ok.sum())} ok, "
          f"{int((~ok).sum())} failed), carbons covered "
          f"{int(s['multiplicity'][ok].sum())}")
    if table.n_sites:
        print(f"  bytes per site {size / table.n_sites:.0f}")
        print(f"  E_exc {np.nanmin(s['excitation_energy'][ok]):.2f} .. "
              f"{np.nanmax(s['excitation_energy'][ok]):.2f} eV; median seconds per site "
              f"{np.median(s['seconds']):.1f}")
        heavy = table.molecules["n_heavy"][s["molecule"]]
        for h in np.unique(heavy):
            print(f"  heavy atoms {h}: {int((heavy == h).sum())} sites")
        method = np.asarray(s["ionisation_method"], dtype=str)
        print(f"  C 1s ionisation energies: {int((method == 'dscf').sum())} Delta-SCF, "
              f"{int((method == 'estimate').sum())} estimated, "
              f"{int((method[ok] == '').sum())} usable sites without one"
              + ("" if (method[ok] != "").all() else " (corefit db ionise adds them)"))
        stages, counts = np.unique(np.asarray(s["stage"][ok], dtype=str), return_counts=True)
        print("  converged by " + ", ".join(f"{st} {n}" for st, n in
                                            sorted(zip(stages, counts), key=lambda t: -t[1])))
        reasons = {}
        for st in s["status"][~ok]:
            reasons[st] = reasons.get(st, 0) + 1
        for r, n in sorted(reasons.items(), key=lambda t: -t[1])[:10]:
            print(f"  failed x{n}: {r}")
    pending = journal_keys(args.db)
    if pending:
        print(f"  {len(pending)} molecules in journals (shards still being built)")
    print(f"  recipe: {json.dumps(table.recipe)}")
    return 0


def _ionise(args):
    from napari_corefit.backend import ionisation_store as store

    if not args.db.is_dir():
        raise SystemExit(f"corefit db ionise: no database at {args.db}")
    if args.estimate:
        from napari_corefit.backend.storage import load_database

        table = load_database(args.db)
        ref = np.where(table.sites["ionisation_method"] == "dscf",
                       table.sites["ionisation_energy"], np.nan).astype(np.float64)
        if np.isfinite(ref).sum() < 20:
            raise SystemExit(f"corefit db ionise: {args.db}: only {np.isfinite(ref).sum()} "
                             "Delta-SCF sites; run the Delta-SCF pass first")
        coef, errors, n_ref = store.fit_estimator(table, ref)
        part = store.write_estimates(args.db, table, coef, errors)
        a = np.abs(errors)
        print(f"estimator fitted on {n_ref} Delta-SCF sites; their 5-fold cross-validated "
              f"|error| (by molecule): median {np.median(a):.3f} eV, 95th percentile "
              f"{np.percentile(a, 95):.3f} eV, largest {a.max():.2f} eV; wrote {part}",
              file=sys.stderr)
        return 0
    deadline = None if args.deadline is None else time.time() + args.deadline

    def progress(done, total, msg):
        if not args.quiet:
            print(f"[{done}/{total}] {msg}", file=sys.stderr, flush=True)

    n = store.run_dscf_pass(args.db, limit=args.limit, seed=args.seed, max_atoms=args.max_atoms,
                            min_atoms=args.min_atoms, deadline=deadline, progress=progress)
    print(f"{n} sites ionised", file=sys.stderr)
    if args.flush:
        part = store.flush_journal(args.db)
        print(f"wrote {part}" if part else "journal empty", file=sys.stderr)
    return 0


def _flush(args):
    from napari_corefit.backend.storage import flush_journals

    written = flush_journals(args.db)
    print(f"wrote {len(written)} shard parts", file=sys.stderr)
    return 0


def _forget(args):
    from napari_corefit.backend.storage import finished_keys, forget_molecules

    if args.held_by is not None and not args.held_by.is_dir():
        raise SystemExit(f"corefit db forget: no database at {args.held_by}")
    held = finished_keys(args.held_by) if args.held_by is not None else set()

    def select(key, a):
        status = a["meta"]["site_status"]
        stage = a["meta"]["site_stage"]
        e = np.asarray(a["excitation_energy"], dtype=float)
        return (key in args.keys or key in held
                or (args.failed and any(s != "ok" for s in status))
                or any(s in args.stage for s in stage)
                or (args.below is not None and bool(np.any(e < args.below))))

    if not (args.failed or args.stage or args.keys or args.below is not None
            or args.held_by is not None):
        raise SystemExit("corefit db forget: say which molecules (--failed, --stage, --below, "
                         "--keys, --in)")
    if args.dry_run:
        from napari_corefit.backend.storage import read_records

        keys = [k for p in sorted(args.db.glob("*.h5")) for k, a in read_records(p)
                if select(k, a)]
        print("\n".join(keys))
        print(f"{len(keys)} molecules would be forgotten", file=sys.stderr)
        return 0
    keys, parts = forget_molecules(args.db, select)
    print(f"forgot {len(keys)} molecules; rewrote {len(parts)} shard parts", file=sys.stderr)
    return 0


def _upgrade(args):
    from napari_corefit.backend.storage import FORMAT_VERSION, upgrade_shards

    if not args.db.is_dir():
        raise SystemExit(f"corefit db upgrade: no database at {args.db}")
    before = sum(p.stat().st_size for p in args.db.glob("*.h5"))
    parts = upgrade_shards(args.db)
    after = sum(p.stat().st_size for p in args.db.glob("*.h5"))
    print(f"rewrote {len(parts)} shard parts in format {FORMAT_VERSION}: "
          f"{before / 1e6:.2f} -> {after / 1e6:.2f} MB", file=sys.stderr)
    return 0


def _merge(args):
    from napari_corefit.backend.storage import load_database, merge_databases

    written = merge_databases(args.sources, args.output)
    load_database(args.output)  # warns about any duplicated molecules
    print(f"merged {len(written)} shard parts into {args.output}", file=sys.stderr)
    return 0


def _export(args):
    from napari_corefit.backend import curves
    from napari_corefit.backend.storage import load_database
    from napari_corefit.spectra.grids import ABSOLUTE_GRID, DOS_GRID, SPECTRUM_GRID

    table = load_database(args.db).ok()
    if args.grid == "model":
        grid = SPECTRUM_GRID
        spectra = curves.site_spectra(table, grid)
    else:
        grid = ABSOLUTE_GRID
        spectra = curves.absolute_site_spectra(table, grid.values)
    dos = curves.site_dos(table, DOS_GRID)
    np.savez_compressed(args.output, spectra=spectra.astype(np.float32),
                        spectrum_energy=grid.values, dos=dos.astype(np.float32),
                        dos_energy=DOS_GRID.values,
                        excitation_energy=table.sites["excitation_energy"],
                        molecule=np.asarray(table.molecules["key"][table.sites["molecule"]],
                                            dtype=str),
                        atom_index=table.sites["atom_index"])
    print(f"exported {table.n_sites} sites to {args.output}", file=sys.stderr)
    return 0


def _bundle(args):
    from napari_corefit.backend.molecules import qm9_molecules, write_xyz_bundle

    mols = qm9_molecules(ids=args.ids, min_heavy=args.min_heavy, max_heavy=args.max_heavy,
                         sample=args.sample, seed=args.seed)
    mols = _skip_held(mols, args.skip_held_by, "corefit db xyz-bundle")[: args.limit]
    if args.largest_first:
        # a build stopped by a deadline then ends on small molecules: less time lost waiting
        mols = sorted(mols, key=lambda m: -len(m.carbons))
    write_xyz_bundle(mols, args.output)
    print(f"wrote {len(mols)} molecules to {args.output}", file=sys.stderr)
    return 0


def _compute(args):
    from napari_corefit.backend.compute_cli import compute_and_report

    return compute_and_report(args)
