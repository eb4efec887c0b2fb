"""Database builds: a process pool on one machine, or a Dask cluster; one writer owns the files.

Workers compute molecules and return compact records (:mod:`records`); the calling process is
the only one that touches the database directory: it journals every record as it arrives and
writes a shard part when all of a shard's molecules are done (:mod:`storage`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from napari_corefit.backend.compute import MoleculeRecord, compute_molecule, set_threads
from napari_corefit.backend.recipe import Recipe
from napari_corefit.backend.records import record_to_arrays
from napari_corefit.backend.storage import (Journal, database_recipes, finished_keys,
                                            flush_journals, journal_keys, shard_key)

__all__ = ["build_database", "plan_build", "compute_record", "STOP"]

#: Set by the signal handlers of ``corefit db build`` (SIGINT, SIGTERM) besides raising
#: KeyboardInterrupt: a KeyboardInterrupt raised while a finaliser or weakref callback runs is
#: printed and dropped ("Exception ignored in ..."; seen with spawned pool workers, where the
#: build then ran to its end), so the pool loop also checks this flag after every wait.
STOP = threading.Event()


class _Timeout(BaseException):
    """The CPU-time limit of a molecule ran out.

    A BaseException, like KeyboardInterrupt: the per-site ``except Exception`` that keeps one
    failed site from failing its molecule must not swallow it (it did: the site was recorded as
    failed with an empty message and the molecule ran on without a limit).
    """


class _CpuLimit:
    """A CPU-time limit that keeps firing until it is disarmed.

    One signal is not enough: Python runs the handler between bytecodes, and an exception raised
    inside a finaliser or a C callback is printed and dropped ("Exception ignored in ..."), so a
    one-shot timer could be lost and the molecule run on without a limit. After the first expiry
    the timer repeats every tenth of the limit until the molecule's work returns.
    """

    def __init__(self, seconds):
        self.seconds = float(seconds)
        self.armed = False
        self.fired = False

    def _on_timer(self, signum, frame):
        if self.armed:
            self.fired = True
            raise _Timeout()

    def __enter__(self):
        signal.signal(signal.SIGPROF, self._on_timer)
        self.armed = True
        limit = self.seconds * _THREADS
        signal.setitimer(signal.ITIMER_PROF, limit, limit / 10)
        return self

    def __exit__(self, *exc):
        self.armed = False  # first: a signal arriving now must not raise outside the work
        signal.setitimer(signal.ITIMER_PROF, 0)
        return False


#: threads of this worker's computation: the CPU-time limit is per thread of work
_THREADS = 1

#: molecules a worker process computes before a fresh one replaces it. A long-lived worker's
#: memory only grows (measured 2026-12-03 on 21-26-atom QM9 molecules: 0.75 GB fresh, 3.0 GB
#: after ~5 molecules, 4.4 GB after ~7, and 7.4 GB after ~25, when the kernel's out-of-memory
#: killer ended it and with it the build; the heap, not a cache of ours: the only module-level
#: one, fastscf's grid points, holds four molecules). A fresh worker is a fork of the parent,
#: milliseconds against the 30-60 s of such a molecule.
WORKER_MOLECULES = 4

#: a molecule in flight when its pool's workers died this many times is left for a later build
#: (a worker killed from outside, e.g. for memory, breaks the whole pool: every molecule in
#: flight is lost and computed again, but one that kills its worker each time must not loop)
MAX_WORKER_DEATHS = 2


def compute_record(molecule, recipe, timeout=None):
    """Worker task: compute one molecule and return ``(key, arrays)``; never raises.

    ``timeout`` is in CPU seconds (per thread of the worker): a process suspended with its
    machine, or slowed by other work on a shared one, is not failed for time it did not run.
    """
    t0 = time.perf_counter()
    # signals reach only a main thread: Dask runs tasks in worker threads, where the cluster's
    # own limits apply instead
    timeout = timeout if threading.current_thread() is threading.main_thread() else None
    limit = _CpuLimit(timeout) if timeout else None
    try:
        with limit or contextlib.nullcontext():
            rec = compute_molecule(molecule, recipe)
        if limit is not None and limit.fired:  # it ran out, but its exception was swallowed
            raise _Timeout()
    except _Timeout:
        rec = MoleculeRecord(key=molecule.key, name=molecule.name, source=molecule.source,
                             smiles=molecule.smiles, geometry=molecule.geometry,
                             symbols=list(molecule.symbols), coords=molecule.coords,
                             status=f"failed: timeout after {timeout} CPU s")
        rec.seconds = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - a molecule must never crash a build
        rec = MoleculeRecord(key=molecule.key, name=molecule.name, source=molecule.source,
                             smiles=molecule.smiles, geometry=molecule.geometry,
                             symbols=list(molecule.symbols), coords=molecule.coords,
                             status=f"failed: {type(exc).__name__}: {exc}")
    return molecule.key, record_to_arrays(rec, recipe)


def _use_threads(threads):
    global _THREADS
    _THREADS = max(1, int(threads))
    set_threads(threads)


def _init_worker(threads):
    _use_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt does
    # a forked worker inherits the CLI's SIGTERM handler, which raises KeyboardInterrupt: inside
    # an SCF that can be swallowed and the worker computes on after terminate(); die at once
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def plan_build(molecules, db_dir):
    """Molecules still to compute, grouped by shard key, and how many are already done."""
    done = finished_keys(db_dir) | journal_keys(db_dir)
    groups = defaultdict(list)
    for m in molecules:
        groups[shard_key(m.key)].append(m)
    todo = [m for m in molecules if m.key not in done]
    return todo, groups, len(molecules) - len(todo)


class _Writer:
    """Owns the database directory during a build."""

    def __init__(self, db_dir, groups, recipe, attrs):
        self.db_dir = Path(db_dir)
        self.groups = {k: {m.key for m in ms} for k, ms in groups.items()}
        self.recipe = recipe
        self.attrs = attrs
        self.journals = {}
        self.shards = []
        for stale in self.db_dir.glob(".*.h5.tmp"):
            stale.unlink()  # a shard whose writer was killed before its rename: never data

    def add(self, key, arrays):
        sk = shard_key(key)
        j = self.journals.get(sk)
        if j is None:
            j = self.journals[sk] = Journal(self.db_dir, sk)
            j.set_info(recipe=self.recipe.to_dict(), attrs=self.attrs)
        j.add(key, arrays)
        self._maybe_finish(sk)

    def _maybe_finish(self, sk):
        j = self.journals[sk]
        have = j.keys() | finished_keys(self.db_dir, sk)
        if self.groups.get(sk, set()) <= have:
            self.journals.pop(sk).close()
            self.shards += flush_journals(self.db_dir, self.recipe.to_dict(), only={sk},
                                          delete=True)

    def finish_complete_groups(self):
        # groups whose molecules were all done before this build started
        for sk in list(self.groups):
            if (self.db_dir / ".journal" / f"{sk}.sqlite").exists():
                self.journals.setdefault(sk, Journal(self.db_dir, sk))
                self._maybe_finish(sk)

    def close(self):
        for j in self.journals.values():
            j.close()


def build_database(molecules, db_dir, recipe=None, workers=None, threads=None, timeout=1800,
                   scheduler=None, deadline=None, flush_at_end=False, progress=True):
    """Compute every molecule not yet in the database at ``db_dir``.

    Parameters
    ----------
    molecules : list of Molecule
    db_dir : path
    recipe : Recipe, optional
    workers, threads : int, optional
        Worker processes and threads each (default: one worker per core, one thread each,
        measured fastest on 2 cores; docs/backend.md).
    timeout : float
        Seconds per molecule before it is recorded as failed.
    scheduler : str or distributed.Client, optional
        Address of a Dask scheduler (or a Client): compute on the cluster instead of locally.
    deadline : float, optional
        Seconds from now after which no new molecule is started; in-flight ones finish
        locally (on a Dask cluster they are cancelled with the rest: a rerun computes them).
    flush_at_end : bool
        Write shard parts from every journal at the end, even for unfinished shards (use before
        committing or when the machine is about to go away).
    progress : bool
        A progress bar on stderr.

    Returns
    -------
    dict
        ``computed``, ``skipped``, ``failed_sites``, ``sites``, ``seconds``, ``shards``.
    """
    recipe = recipe or Recipe()
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    _check_same_recipe(db_dir, recipe)
    todo, groups, skipped = plan_build(molecules, db_dir)
    attrs = {"code": _code_versions()}
    writer = _Writer(db_dir, groups, recipe, attrs)
    writer.finish_complete_groups()
    t_start = time.perf_counter()
    stats = {"computed": 0, "skipped": skipped, "sites": 0, "failed_sites": 0, "shards": []}
    bar = _progress_bar(len(todo), progress)
    stop_at = None if deadline is None else time.monotonic() + deadline

    def handle(key, arrays):
        writer.add(key, arrays)
        stats["computed"] += 1
        meta = json.loads(arrays["meta"].tobytes())
        n_sites = len(meta["site_status"])
        stats["sites"] += n_sites
        stats["failed_sites"] += sum(s != "ok" for s in meta["site_status"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(sites=stats["sites"], failed=stats["failed_sites"])

    try:
        if scheduler is not None:
            _run_dask(todo, recipe, timeout, scheduler, handle, stop_at)
        else:
            _run_local(todo, recipe, timeout, workers, threads, handle, stop_at)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        if flush_at_end:
            writer.shards += flush_journals(db_dir, recipe.to_dict(), delete=True)
    stats["shards"] = [str(p) for p in writer.shards]
    stats["seconds"] = time.perf_counter() - t_start
    return stats


def _check_same_recipe(db_dir, recipe):
    """A database directory holds one recipe: a build never adds records of another.

    (A rerun skips the molecules already there, whatever their recipe, so a build with a new
    recipe in an old directory would leave a mixture that no one asked for.)
    """
    for old in database_recipes(db_dir):
        try:
            same = Recipe.from_dict(old) == recipe
        except (TypeError, ValueError):
            same = False
        if not same:
            version = old.get("version", "?") if isinstance(old, dict) else "?"
            raise ValueError(
                f"{db_dir} holds records of another recipe (version {version}; this build: "
                f"version {recipe.version}, fingerprint {recipe.fingerprint()}). Build into a "
                f"new directory, or continue the old recipe with `corefit db build --recipe "
                f"FILE` (the recipe JSON that `corefit db info` prints).")


def _run_local(todo, recipe, timeout, workers, threads, handle, stop_at):
    cores = os.cpu_count() or 1
    workers = workers or cores
    threads = threads or max(1, cores // workers)
    STOP.clear()
    if workers == 1:
        _use_threads(threads)
        for m in todo:
            if stop_at is not None and time.monotonic() > stop_at:
                break
            if STOP.is_set():
                raise KeyboardInterrupt
            handle(*compute_record(m, recipe, timeout))
        return
    pools = _Pools(workers, threads)
    inflight, deaths = {}, defaultdict(int)  # future -> molecule; key -> pool deaths seen
    try:
        queue = list(reversed(todo))
        while queue or inflight:
            # one molecule beyond the workers keeps them all busy; more would not help, and
            # the pool starts every submitted molecule (none can be taken back at a deadline)
            while queue and len(inflight) < workers + 1 and (stop_at is None or
                                                            time.monotonic() < stop_at):
                m = queue.pop()
                inflight[pools.submit(compute_record, m, recipe, timeout)] = m
            if not inflight:
                break
            done, _ = wait(inflight, timeout=0.25, return_when=FIRST_COMPLETED)
            if STOP.is_set():
                raise KeyboardInterrupt
            lost = []
            for fut in done:
                m = inflight.pop(fut)
                if isinstance(fut.exception(), BrokenProcessPool):
                    lost.append(m)
                else:
                    handle(*fut.result())
            if lost:
                # a worker died (killed by the out-of-memory killer, say): its pool is done for,
                # and every molecule in flight there with it; they start again in a new pool
                pools.renew()
                for m in lost:
                    deaths[m.key] += 1
                    if deaths[m.key] < MAX_WORKER_DEATHS:
                        queue.append(m)
                    else:
                        print(f"corefit db build: {m.key} left for a later build: the pool "
                              f"died {deaths[m.key]} times while computing it", file=sys.stderr)
                again = sum(deaths[m.key] < MAX_WORKER_DEATHS for m in lost)
                print(f"corefit db build: a worker process died; {again} of the {len(lost)} "
                      "molecule(s) in flight start again in a new pool", file=sys.stderr)
            if stop_at is not None and time.monotonic() > stop_at:
                queue.clear()
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM, see backend.cli): stop now instead of waiting minutes for the
        # molecules in progress. Finished ones are in the journal; a rerun computes the others.
        pools.kill()
        raise
    pools.shutdown()


class _Pools:
    """Forked process pools, a fresh one every ``WORKER_MOLECULES`` molecules per worker.

    The pool that is replaced computes what it was given and its workers exit; the molecules in
    flight stay at most ``workers + 1`` over all pools. (``max_tasks_per_child`` would do this
    within one pool, but only with spawned workers, whose multiprocessing resource tracker
    outlives an interrupted build as a zombie in its process group.)
    """

    def __init__(self, workers, threads):
        self.workers, self.threads = workers, threads
        self.pool, self.count, self.old, self.owner = self._new(), 0, [], {}

    def _new(self):
        return ProcessPoolExecutor(max_workers=self.workers, initializer=_init_worker,
                                   initargs=(self.threads,))

    def submit(self, *args):
        if self.count >= self.workers * WORKER_MOLECULES:
            self._replace(cancel=False)  # it finishes its molecules, then its workers exit
        try:
            fut = self.pool.submit(*args)
        except BrokenProcessPool:  # a worker died since the last wait: a new pool takes it
            self.renew()
            fut = self.pool.submit(*args)
        self.count += 1
        self.owner[fut] = self.pool
        fut.add_done_callback(lambda f: self.owner.pop(f, None))
        return fut

    def renew(self):
        """Replace the current pool after a worker of some pool died."""
        self._replace(cancel=True)

    def _replace(self, cancel):
        self.pool.shutdown(wait=False, cancel_futures=cancel)
        live = set(self.owner.values())  # pools with molecules still in flight
        self.old = [p for p in self.old if p in live] + [self.pool]
        self.pool, self.count = self._new(), 0

    def kill(self):
        pools = [*self.old, self.pool]
        procs = [proc for p in pools for proc in (p._processes or {}).values()]
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        for p in pools:
            p.shutdown(wait=False, cancel_futures=True)

    def shutdown(self):
        for p in [*self.old, self.pool]:
            p.shutdown()


def _run_dask(todo, recipe, timeout, scheduler, handle, stop_at):
    from distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        futures = client.map(compute_record, todo, recipe=recipe, timeout=timeout, pure=False)
        for fut in as_completed(futures):
            handle(*fut.result())
            if stop_at is not None and time.monotonic() > stop_at:
                for f in futures:
                    f.cancel()
                break
    finally:
        if not isinstance(scheduler, Client):
            client.close()


def _code_versions():
    import numpy
    import pyscf

    from napari_corefit import __version__

    return {"napari_corefit": __version__, "pyscf": pyscf.__version__, "numpy": numpy.__version__,
            "python": sys.version.split()[0]}


def _progress_bar(total, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="mol", desc="database", file=sys.stderr, dynamic_ncols=True)
