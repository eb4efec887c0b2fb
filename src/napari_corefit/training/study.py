"""The full training study behind the bundled model and its model card, in one command.

Steps (each a ``train_model`` run on the same database, all with the same random split unless
said otherwise):

1. architecture comparison: a small ensemble of every candidate architecture; the one with the
   lowest mean *validation* loss wins, unless a network with fewer weights is within the
   member-to-member spread of it (:func:`choose_architecture`; the test molecules stay untouched
   by the choice);
2. the default site-level ensemble of the winner;
3. the molecule-level ensemble;
4. the noise study: one model per training noise level;
   the learning curve: one model per share of the training molecules;
5. the extrapolation designs, when the database holds molecules with 21-26 atoms;
6. the model card (:mod:`napari_corefit.training.report`), and optionally installing the default
   as the package's bundled model.

Usage::

    python -m napari_corefit.training.study --db data/db --out work-tmp/study --install
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np

from napari_corefit.model.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, default_model_dir,
                                             load_model, save_model)
from napari_corefit.training.carry import CARRIABLE, card_architecture, card_origin, read_sections
from napari_corefit.training.loop import TrainSettings
from napari_corefit.training.noise import NoiseModel
from napari_corefit.training.train import train_model

__all__ = ["run_study", "choose_architecture", "install_default", "main"]

#: Subdirectory of a study's output where every finished ensemble member is kept.
MEMBER_CACHE = "member-cache"


def install_default(model_dir, level="site", weights_dtype="float32") -> Path:
    """Copy a checkpoint into the package's bundled-model folder (optionally stored in half
    precision or int8, see :func:`~napari_corefit.model.checkpoint.save_model`)."""
    dest = default_model_dir(level)
    dest.mkdir(parents=True, exist_ok=True)
    if weights_dtype == "float32":
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copyfile(Path(model_dir) / name, dest / name)
    else:
        m = load_model(model_dir)
        save_model(dest, m.ensemble, m.config, ood=m.ood, weights_dtype=weights_dtype)
    return dest


def _member_losses(loaded) -> np.ndarray:
    return np.array([m["best_val_loss"] for m in loaded.config["training"]["members"]])


def _n_weights(arch) -> int:
    from napari_corefit.model.network import build_network, default_arch

    return sum(p.numel() for p in build_network(default_arch(arch)).parameters())


def choose_architecture(losses: dict) -> tuple:
    """The architecture with the lowest mean validation MSE of its members, unless a smaller
    network is within the member-to-member spread of the best (then the smaller one: inference
    cost grows with the weights, and a difference inside the seed noise is no evidence).

    Returns ``(name, reason)``.
    """
    means = {a: float(np.mean(v)) for a, v in losses.items()}
    best = min(means, key=means.get)
    spread = float(np.std(losses[best], ddof=1)) if len(losses[best]) > 1 else 0.0
    close = [a for a in means if means[a] <= means[best] + spread]
    smallest = min(close, key=_n_weights)
    if smallest == best:
        return best, f"lowest mean validation MSE {means[best]:.4g}"
    return smallest, (f"validation MSE {means[smallest]:.4g} within the member spread "
                      f"({spread:.2g}) of the best, {best} ({means[best]:.4g}), with fewer "
                      f"weights ({_n_weights(smallest):,} vs {_n_weights(best):,})")


#: ``train_model``'s own default, for a model submitted without ``n_members``
_MEMBERS_DEFAULT = inspect.signature(train_model).parameters["n_members"].default


def _die_on_interrupt():
    """Worker initializer: an interrupt ends the worker process.

    A ``ProcessPoolExecutor`` worker catches a ``KeyboardInterrupt`` raised in its task like
    any other exception, reports it and takes the next queued task, and an interrupted study
    waited at exit for every queued model: after Ctrl-C (SIGINT to the study's process group)
    the workers went on training for hours. Now the workers die, and the study cancels what
    is queued (finished models are kept: a rerun with ``--resume`` reuses them).
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _worker_pool(jobs):
    """A process pool for independent trainings (spawned processes that an interrupt ends)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a forked child inherits torch's thread pools in an unusable state
    return ProcessPoolExecutor(int(jobs), mp_context=mp.get_context("spawn"),
                               initializer=_die_on_interrupt)


def _train_quiet(db, out, settings, kw):
    """One training in a worker process (no progress bars: they would interleave)."""
    train_model(db, out, settings=settings, progress=False, **kw)


class _Trainer:
    """Trains named models under ``out``, in order (``jobs=1``) or in a process pool.

    ``submit`` starts one (or reuses its checkpoint with ``resume``); ``wait`` returns every
    model submitted so far, loaded back from its checkpoint, by name.
    """

    def __init__(self, db, out, table, settings, jobs=1, resume=False, progress=True):
        self.db, self.out, self.table, self.settings = db, Path(out), table, settings
        self.resume, self.progress = resume, progress
        self.log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
        self.pending, self.done = {}, {}
        self.executor = None
        if int(jobs) > 1:
            self.executor = _worker_pool(jobs)

    def submit(self, name, settings=None, **kw):
        settings = settings or self.settings
        path = self.out / name
        # one member cache for the whole study: the architecture comparison's members are the
        # first members of the default ensemble, and its learning-curve point at 1 is member 0
        kw.setdefault("member_cache", str(self.out / MEMBER_CACHE))
        if self.resume and (path / CONFIG_FILE).is_file():
            self.log(f"== {name}: reusing {path}")
            self.done[name] = load_model(path)
        elif self.executor is None:
            self.log(f"== {name}")
            self.done[name] = train_model(self.db, path, table=self.table,
                                          settings=settings, progress=self.progress, **kw)
        else:
            # each member in a process of its own (an ensemble's members are independent: on a
            # GPU a whole study then takes about as long as its slowest member, not five in a
            # row); the ensemble is assembled from the member cache once they are all done
            n = kw.get("n_members", _MEMBERS_DEFAULT)
            members = [self.executor.submit(_train_quiet, str(self.db), str(path), settings,
                                            {**kw, "only_members": [i]})
                       for i in range(n)] if n > 1 else []
            self.log(f"== {name}: {max(n, 1)} member(s) started in worker processes")
            self.pending[name] = (settings, kw, members)

    def wait(self) -> dict:
        for settings, kw, members in self.pending.values():
            for fut in members:
                fut.result()
        # every member is cached now: the assembly (and the single-member models' training),
        # calibration and test evaluation run side by side
        assembling = {name: self.executor.submit(_train_quiet, str(self.db), str(self.out / name),
                                                 settings, kw)
                      for name, (settings, kw, _) in self.pending.items()}
        for name, fut in assembling.items():
            fut.result()
            self.done[name] = load_model(self.out / name)
            self.log(f"== {name}: done")
        self.pending.clear()
        return self.done

    def close(self, cancel=False):
        """Shut the pool down; ``cancel`` drops the trainings not yet started (on an error or
        an interrupt, so that none starts after the study has given up)."""
        if self.executor is not None:
            self.executor.shutdown(wait=not cancel, cancel_futures=cancel)


def _compare_architectures(pool, out, archs, compare_members, res):
    """Train ``compare_members`` members of each architecture; return (chosen, why)."""
    for arch in archs:
        pool.submit(f"arch_{arch}", arch=arch, n_members=compare_members)
    done = pool.wait()
    losses = {arch: _member_losses(done[f"arch_{arch}"]) for arch in archs}
    for arch in archs:
        res["arch_models"][arch] = str(out / f"arch_{arch}")
        pool.log(f"{arch}: mean validation MSE {losses[arch].mean():.4g}")
    best, why = choose_architecture(losses)
    scores = {a: float(v.mean()) for a, v in losses.items()}
    res.update(arch_validation_mse=scores, chosen_arch=best, chosen_because=why)
    return best, why


def run_study(db, out, archs=("paper_mlp", "two_head_mlp", "cnn1d"), compare_members=2,
              members=5, noise_levels=(1e2, 1e3, 1e4, 1e5), noise_members=1, molecule=True,
              extrapolation=True, settings=None, install=False, card=None, images=None,
              notes=None, weights_dtype="float32", progress=True, command=None, resume=False,
              jobs=1, learning_curve=(0.125, 0.25, 0.5, 1.0), beyond_db=None,
              previous_model=None, noise_max_seconds=None, carry_from=None, arch_reason=None,
              molecule_arch=None):
    """Run the study; return a dict of what was trained and chosen (also saved as study.json).

    With ``resume``, a model whose checkpoint already exists under ``out`` (from an earlier,
    interrupted or identical run) is loaded instead of trained again. With ``jobs`` > 1,
    independent models train in that many processes at once (same results as one by one: each
    model's seeds do not depend on the order). ``learning_curve`` lists shares of the training
    molecules to train one model each on (``noise_members`` members; same validation and test
    molecules): test accuracy against training-set size. ``previous_model`` (the checkpoint
    the new default replaces) is scored in the card on the same test sites, by molecule size.
    ``noise_max_seconds`` replaces the per-member time limit of the noise-trained models: a
    fresh noise draw every epoch keeps them improving for longer than noise-free members.
    ``carry_from`` (an earlier model card) makes a quick retrain: only the default and
    molecule-level ensembles of the one architecture in ``archs`` are trained, and the card
    carries that card's architecture comparison, noise study, learning curve and extrapolation
    sections, labelled (:mod:`napari_corefit.training.carry`). Its architecture is the carried
    card's choice unless ``arch_reason`` says why another one (measured since) is trained.
    ``molecule_arch`` trains the molecule-level ensemble with another architecture than the
    site-level default's (e.g. a smaller one, to keep the bundled weights small).
    """
    from napari_corefit.backend import load_database

    out = Path(out)
    if carry_from is not None:
        if len(archs) != 1:
            raise ValueError(f"a quick retrain (carry_from) trains one architecture, the one "
                             f"the carried card chose; got {list(archs)}")
        carried = read_sections(carry_from)
        missing = [p for p in CARRIABLE if not any(t.startswith(p) for t in carried)]
        if missing:
            raise ValueError(f"{carry_from}: no section to carry for {missing}")
        # the card would otherwise say "as chosen by" a card that chose something else
        chosen = card_architecture(carry_from)
        if arch_reason is None and chosen is not None and archs[0] != chosen:
            raise ValueError(f"{carry_from} chose {chosen}, not {archs[0]}: a quick retrain of "
                             "another architecture needs arch_reason (the measurement since)")
    elif arch_reason is not None:
        raise ValueError("arch_reason is for a quick retrain (carry_from); a full study "
                         "chooses its architecture by the comparison")
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or TrainSettings()
    table = load_database(db)
    res = {"db": str(db), "settings": settings.to_dict(), "arch_models": {}}

    # independent trainings run side by side in ``jobs`` processes (one torch thread each: these
    # small networks gain little from a second thread, a second process doubles the work done)
    pool = _Trainer(db, out, table, settings, jobs=jobs, resume=resume, progress=progress)
    log = pool.log
    try:
        if carry_from is None:
            best, why = _compare_architectures(pool, out, archs, compare_members, res)
        else:
            best = archs[0]
            why = arch_reason or f"as chosen by {card_origin(carry_from)} (carried over)"
            res.update(chosen_arch=best, chosen_because=why, carried_from=str(carry_from))
        log(f"chosen architecture: {best} ({why})")

        pool.submit("default", arch=best, n_members=members)
        res["default"] = str(out / "default")
        if molecule:
            res["molecule_arch"] = molecule_arch or best
            pool.submit("molecule", arch=res["molecule_arch"], n_members=members,
                        level="molecule")
            res["molecule"] = str(out / "molecule")
        if carry_from is not None:
            # the side studies come from the carried card: nothing more to train
            noise_levels, learning_curve, extrapolation = (), (), False
        res["noise_models"] = {} if carry_from is not None else {"inf": str(out / "default")}
        noise_settings = (settings if noise_max_seconds is None else
                          dataclasses.replace(settings, max_seconds=float(noise_max_seconds)))
        for n in noise_levels:
            name = f"noise_{n:.0e}".replace("+0", "")
            pool.submit(name, settings=noise_settings, arch=best, n_members=noise_members,
                        noise=NoiseModel(counts=n))
            res["noise_models"][f"{n:g}"] = str(out / name)
        res["learning_curve_models"] = {}
        for f in learning_curve:
            name = f"lc_{f:g}"
            pool.submit(name, arch=best, n_members=noise_members, train_fraction=f)
            res["learning_curve_models"][f"{f:g}"] = str(out / name)
        res["extrapolation_models"] = []
        n_atoms = np.asarray(table.molecules["n_atoms"])
        n_big = int(((n_atoms >= 21) & (n_atoms <= 26)).sum())
        res["n_molecules_21_26_atoms"] = n_big
        if extrapolation and n_big >= 5:
            for kind in ("extrapolation", "extrapolation_18_20"):
                pool.submit(kind, arch=best, n_members=noise_members, split=kind)
                res["extrapolation_models"].append(str(out / kind))
        elif extrapolation:
            log(f"extrapolation skipped: only {n_big} molecules with 21-26 atoms in the database")
        pool.wait()
    except BaseException:
        # an error, or an interrupt: start nothing more, and do not wait for the queue
        pool.close(cancel=True)
        raise
    pool.close()
    (out / "study.json").write_text(json.dumps(res, indent=2))
    if install:
        res["installed"] = str(install_default(out / "default", weights_dtype=weights_dtype))
        if molecule:
            install_default(out / "molecule", level="molecule", weights_dtype=weights_dtype)
    if card:
        from napari_corefit.training.report import write_model_card
        from napari_corefit.training.noise import parse_counts

        default = res.get("installed", res["default"])
        write_model_card(db, default, card, images or Path(card).parent / "images",
                         molecule_model=res.get("molecule"),
                         noise_models={parse_counts(k): v for k, v in
                                       res["noise_models"].items()},
                         extrapolation_models=res["extrapolation_models"] or None,
                         arch_models=res["arch_models"], notes=notes,
                         learning_curve_models={float(k): v for k, v in
                                                res["learning_curve_models"].items()},
                         history_dir=res["default"], reproduce=command,
                         arch_choice=f"`{best}`, {why}", beyond_db=beyond_db,
                         previous_model=previous_model, carry_from=carry_from)
    return res


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m napari_corefit.training.study",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--archs", default="paper_mlp,two_head_mlp,cnn1d")
    p.add_argument("--compare-members", type=int, default=2)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--noise-levels", default="1e2,1e3,1e4,1e5")
    p.add_argument("--noise-members", type=int, default=1)
    p.add_argument("--no-molecule", action="store_true")
    p.add_argument("--molecule-arch", default=None, metavar="NAME",
                   help="architecture of the molecule-level ensemble (default: the chosen one)")
    p.add_argument("--no-extrapolation", action="store_true")
    p.add_argument("--epochs", type=int, default=3000)
    p.add_argument("--patience", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-minutes", type=float, default=None, help="per member")
    p.add_argument("--noise-max-minutes", type=float, default=None,
                   help="per member of the noise-trained models (default: --max-minutes)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="train on a moving average of the weights (TrainSettings.ema_decay)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="cosine: the rate falls from --lr to 1e-5 over --epochs "
                   "(TrainSettings.lr_schedule)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--install", action="store_true",
                   help="copy the default (and molecule) model into the package")
    p.add_argument("--card", default=None, help="write the model card here (e.g. "
                   "docs/MODEL_CARD.md)")
    p.add_argument("--images", default=None)
    p.add_argument("--weights-dtype", default="float32", choices=("float32", "float16", "int8"),
                   help="storage of the installed weights")
    p.add_argument("--resume", action="store_true",
                   help="reuse checkpoints already under --out instead of training them again")
    p.add_argument("--notes", default=None)
    p.add_argument("--beyond-db", default=None,
                   help="database of molecules outside the training domain, scored in the card")
    p.add_argument("--learning-curve", default="0.125,0.25,0.5,1",
                   help="shares of the training molecules, one model each ('' for none)")
    p.add_argument("--previous-model", default=None,
                   help="the checkpoint the new default replaces (a copy: --install overwrites "
                   "the bundled one), scored in the card on the same test sites")
    p.add_argument("--jobs", type=int, default=1,
                   help="train this many independent models at once, one process each")
    p.add_argument("--carry-from", default=None, metavar="CARD",
                   help="quick retrain: train only the default and molecule ensembles (one "
                   "architecture, --archs) and carry the side studies of this earlier model "
                   "card into the new one, labelled")
    p.add_argument("--arch-reason", default=None, metavar="TEXT",
                   help="quick retrain of an architecture other than the carried card's "
                   "choice: why (a measurement since), printed on the card")
    a = p.parse_args(argv)
    settings = TrainSettings(epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
                             patience=a.patience, seed=a.seed, device=a.device,
                             threads=a.threads, precision=a.precision, ema_decay=a.ema_decay,
                             lr_schedule=a.lr_schedule,
                             max_seconds=None if a.max_minutes is None else 60 * a.max_minutes)
    levels = tuple(float(x) for x in a.noise_levels.split(",") if x.strip())
    res = run_study(a.db, a.out, archs=tuple(a.archs.split(",")),
                    compare_members=a.compare_members, members=a.members, noise_levels=levels,
                    noise_members=a.noise_members, molecule=not a.no_molecule,
                    extrapolation=not a.no_extrapolation, settings=settings,
                    install=a.install, card=a.card, images=a.images, notes=a.notes,
                    weights_dtype=a.weights_dtype, resume=a.resume, jobs=a.jobs,
                    beyond_db=a.beyond_db, previous_model=a.previous_model,
                    carry_from=a.carry_from, arch_reason=a.arch_reason,
                    molecule_arch=a.molecule_arch, noise_max_seconds=None if a.noise_max_minutes is None else
                    60 * a.noise_max_minutes,
                    learning_curve=tuple(float(x) for x in a.learning_curve.split(",")
                                         if x.strip()),
                    # quoted, so that the card's command runs as printed (--notes holds spaces)
                    command=shlex.join(["python", "-m", "napari_corefit.training.study",
                                        *(sys.argv[1:] if argv is None else argv)]))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
