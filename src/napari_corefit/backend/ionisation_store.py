"""C 1s ionisation energies of a database's sites, kept beside its shards (``<db>/ionisation/``).

A database pass adds a field to every site without touching the shards: the values live in their
own immutable parts, joined to the sites by (molecule key, atom index) when the database loads
(:func:`napari_corefit.backend.storage.load_database`). Two methods fill them:

``dscf``
    :func:`napari_corefit.backend.ionisation.compute_ionisation`, the reference (seconds a site).
``estimate``
    :func:`fit_estimator`'s linear model of the site's stored fields, fitted on the ``dscf`` sites
    and measured on sites held out of the fit (docs/backend.md, "Ionisation energies").

A ``dscf`` value wins over an ``estimate`` of the same site. The ``dscf`` pass is resumable: each
finished site is appended to ``journal.jsonl`` (flushed and synced), and :func:`flush_journal`
turns the journal into a new part, never rewritten; a rerun skips every site already in a part or
the journal. The ``estimate`` part is derived from the ``dscf`` parts and replaced whole each time
the estimator is refitted.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import h5py
import numpy as np

__all__ = ["METHODS", "FEATURES", "read_ionisation", "flush_journal", "run_dscf_pass", "fit_estimator",
           "estimate_features", "write_estimates", "join_ionisation"]

SUBDIR = "ionisation"
JOURNAL = "journal.jsonl"
#: stored method codes (uint8); 0 is "missing"
METHODS = {"dscf": 1, "estimate": 2}


def _dir(db_dir) -> Path:
    return Path(db_dir) / SUBDIR


def _read_journal(path):
    rows = []
    if path.exists():
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut by a crash: that site is computed again
    return rows


def read_ionisation(db_dir) -> dict:
    """``{(molecule_key, atom_index): (ip_ev, method_code, status)}`` of every part and journal.

    ``dscf`` values replace ``estimate`` values of the same site; among parts of one method the
    newest wins.
    """
    d = _dir(db_dir)
    out = {}
    if not d.is_dir():
        return out
    rows = []
    for p in sorted(d.glob("*.h5")):
        with h5py.File(p, "r") as f:
            keys = json.loads(f["keys"][()].tobytes().decode())
            mol = f["molecule"][()]
            atom, ip, method = f["atom"][()], f["ip"][()], f["method"][()]
            status = json.loads(f["status"][()].tobytes().decode())
        rows += [(keys[m], int(a), float(e), int(c), s)
                 for m, a, e, c, s in zip(mol, atom, ip, method, status)]
    rows += [(r["key"], int(r["atom"]), float(r["ip"]), METHODS["dscf"], r["status"])
             for r in _read_journal(d / JOURNAL)]
    for key, atom, ip, code, status in rows:
        old = out.get((key, atom))
        if old is None or code <= old[1]:  # dscf (1) over estimate (2)
            out[(key, atom)] = (ip, code, status)
    return out


def _write_part(d, rows, attrs=None) -> Path:
    keys = sorted({r[0] for r in rows})
    index = {k: i for i, k in enumerate(keys)}
    tmp = d / f".part.{os.getpid()}.{uuid.uuid4().hex[:8]}.h5.tmp"

    def blob(obj):
        return np.frombuffer(json.dumps(obj).encode(), np.uint8)

    with h5py.File(tmp, "w") as f:
        opts = dict(compression="gzip", compression_opts=9, shuffle=True)
        f.create_dataset("keys", data=blob(keys), **opts)
        f.create_dataset("molecule", data=np.array([index[r[0]] for r in rows], np.int32), **opts)
        f.create_dataset("atom", data=np.array([r[1] for r in rows], np.int16), **opts)
        f.create_dataset("ip", data=np.array([r[2] for r in rows], np.float32), **opts)
        f.create_dataset("method", data=np.array([r[3] for r in rows], np.uint8), **opts)
        f.create_dataset("status", data=blob([r[4] for r in rows]), **opts)
        f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for k, v in (attrs or {}).items():
            f.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)
    n = len(list(d.glob("part-*.h5")))
    while True:  # a name of its own, never an existing part's (parts are immutable)
        final = d / f"part-{n:03d}.h5"
        try:
            os.link(tmp, final)
            break
        except FileExistsError:
            n += 1
    tmp.unlink()
    return final


def flush_journal(db_dir):
    """Write the ``dscf`` journal as a new immutable part and remove it; returns the part or
    ``None`` when the journal is empty."""
    d = _dir(db_dir)
    rows = _read_journal(d / JOURNAL)
    if not rows:
        return None
    from importlib.metadata import version

    part = _write_part(d, [(r["key"], int(r["atom"]), float(r["ip"]), METHODS["dscf"],
                            r["status"]) for r in rows],
                       {"method": "dscf", "software": {"pyscf": version("pyscf")}})
    (d / JOURNAL).unlink()
    return part


def _molecule(table, m):
    from napari_corefit.backend.molecules import Molecule

    mols = table.molecules
    a, b = mols["atom_offsets"][m], mols["atom_offsets"][m + 1]
    return Molecule(key=str(mols["key"][m]), name=str(mols["name"][m]),
                    symbols=[str(s) for s in mols["symbols"][a:b]], coords=mols["coords"][a:b],
                    source=str(mols["source"][m]), smiles=str(mols["smiles"][m]))


def run_dscf_pass(db_dir, limit=None, seed=0, max_atoms=None, deadline=None, progress=None,
                  min_atoms=None):
    """Delta-SCF ionisation energies of a database's sites, in a seeded random molecule order.

    Parameters
    ----------
    db_dir : path
    limit : int, optional
        Stop after this many new sites.
    seed : int
        Order of the molecules (a random sample of the database at any point of the pass).
    max_atoms, min_atoms : int, optional
        Skip molecules with more (fewer) atoms.
    deadline : float, optional
        ``time.time()`` after which no new site starts.
    progress : callable, optional
        ``progress(done, total, message)`` after each site.

    Returns
    -------
    int
        Sites computed by this call. Each is in the journal as soon as it is done.
    """
    from napari_corefit.backend.ionisation import compute_ionisation
    from napari_corefit.backend.recipe import Recipe
    from napari_corefit.backend.storage import load_database

    table = load_database(db_dir)
    recipe = Recipe(**{k: (tuple(v) if isinstance(v, list) else v)
                       for k, v in table.recipe.items() if k != "version"})
    # estimates do not count as done: the pass replaces them by the reference
    done = {k for k, v in read_ionisation(db_dir).items() if v[1] == METHODS["dscf"]}
    d = _dir(db_dir)
    d.mkdir(exist_ok=True)
    order = np.random.default_rng(seed).permutation(table.n_molecules)
    if max_atoms is not None:
        order = order[table.molecules["n_atoms"][order] <= max_atoms]
    if min_atoms is not None:
        order = order[table.molecules["n_atoms"][order] >= min_atoms]
    sites_of = {}
    for i in np.flatnonzero(table.sites["ok"]):
        sites_of.setdefault(int(table.sites["molecule"][i]), []).append(
            int(table.sites["atom_index"][i]))
    todo = [(m, a) for m in order for a in sites_of.get(int(m), [])
            if (str(table.molecules["key"][m]), a) not in done]
    total = len(todo) if limit is None else min(limit, len(todo))
    n = 0
    with open(d / JOURNAL, "a") as journal:
        for m, atom in todo[:total]:
            if deadline is not None and time.time() > deadline:
                break
            res = compute_ionisation(_molecule(table, m), atom, recipe)
            journal.write(json.dumps({"key": str(table.molecules["key"][m]), "atom": atom,
                                      "ip": res.ionisation_energy, "status": res.status,
                                      "seconds": round(res.seconds, 2)}) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
            n += 1
            if progress is not None:
                progress(n, total, f"{table.molecules['key'][m]} C{atom}: "
                                   f"{res.ionisation_energy:.2f} eV ({res.status})")
    return n


#: names of the estimator's inputs, in the order of :func:`estimate_features`' columns
FEATURES = ("1", "E_exc - 290 eV", "core 1s - median (Koopmans, eV)", "second stick (eV, <= 10)",
            "first stick's share of the weight below 3 eV", "H neighbours", "C neighbours",
            "N neighbours", "O neighbours", "F neighbours", "atoms in the molecule",
            "sum of 1/r to the other heavy atoms (1/A)", "stick weight share below 1 eV",
            "stick weight share below 5 eV", "stick-weighted mean energy (eV)", "sticks",
            "third stick (eV, <= 10)", "log first stick weight", "E_F (eV)",
            "(E_exc - 290 eV)^2", "(core 1s - median)^2", "(E_exc - 290 eV)(core 1s - median)")


def estimate_features(table) -> np.ndarray:
    """Per-site inputs of the estimator, all from stored fields: the Delta-SCF excitation energy,
    the ground-state 1s orbital energy (Koopmans), the first stick energies and weights, and the
    carbon's surroundings in the stored geometry, the Fermi level and the quadratic terms of the
    two energies (:data:`FEATURES`; each was kept because it lowered the cross-validated error).

    The IP is the Koopmans 1s energy less the core hole's relaxation, which the excitation energy
    (relaxed by Delta-SCF itself) and the surroundings (neighbours to screen the hole, molecule
    size) describe; the IP minus the first transition is the first final state's term value, which
    the stick spectrum's spacing tells (a valence pi* lies far below the IP, a Rydberg-like first
    state close to it)."""
    sites, mols = table.sites, table.molecules
    off = table.spec_offsets
    n = table.n_sites
    out = np.zeros((n, len(FEATURES)))
    out[:, 0] = 1.0
    out[:, 1] = sites["excitation_energy"].astype(np.float64) - 290.0
    core = sites["core_1s"].astype(np.float64)
    out[:, 2] = core - np.nanmedian(core) if n else core
    for i in range(n):
        e = table.spec_energy[off[i]:off[i + 1]]
        w = table.spec_intensity[off[i]:off[i + 1]]
        out[i, 3] = min(float(e[1]), 10.0) if e.size > 1 else 10.0
        low = w[e < 3.0].sum() if w.size else 0.0
        out[i, 4] = float(w[0] / low) if w.size and low > 0 else 0.0
        m = sites["molecule"][i]
        a, b = mols["atom_offsets"][m], mols["atom_offsets"][m + 1]
        xyz, sym = mols["coords"][a:b], mols["symbols"][a:b]
        d = np.linalg.norm(xyz - xyz[sites["atom_index"][i]], axis=1)
        bonded = (d > 0.1) & (d < 1.65)
        for j, el in enumerate(("H", "C", "N", "O", "F")):
            out[i, 5 + j] = np.count_nonzero(bonded & (sym == el))
        out[i, 10] = b - a
        heavy = (d > 0.1) & (sym != "H")
        out[i, 11] = float(np.sum(1.0 / d[heavy])) if heavy.any() else 0.0
        total = float(w.sum()) if w.size and w.sum() > 0 else 1.0
        out[i, 12] = float(w[e < 1.0].sum()) / total if w.size else 0.0
        out[i, 13] = float(w[e < 5.0].sum()) / total if w.size else 0.0
        out[i, 14] = float(np.sum(w * e)) / total if w.size else 0.0
        out[i, 15] = e.size
        out[i, 16] = min(float(e[2]), 10.0) if e.size > 2 else 10.0
        out[i, 17] = float(np.log(w[0] + 1e-9)) if w.size else np.log(1e-9)
    out[:, 18] = sites["fermi"].astype(np.float64)
    out[:, 19] = out[:, 1] ** 2
    out[:, 20] = out[:, 2] ** 2
    out[:, 21] = out[:, 1] * out[:, 2]
    return out


def fit_estimator(table, ip, folds=5, seed=0):
    """Least-squares linear model IP ~ :func:`estimate_features` on the sites with a finite
    ``ip`` (the Delta-SCF reference).

    Returns the coefficients fitted on every reference site, the out-of-fold errors of every
    reference site (estimate - reference, eV; ``folds``-fold cross-validation by molecule, so a
    site is scored by a model that saw no site of its molecule), and the reference sites' count.
    """
    x = estimate_features(table)
    ok = np.flatnonzero(np.isfinite(ip) & np.isfinite(x).all(axis=1))
    mol = np.asarray(table.sites["molecule"])[ok]
    groups = np.random.default_rng(seed).permutation(np.unique(mol))
    fold_of = {m: k % folds for k, m in enumerate(groups)}
    fold = np.array([fold_of[m] for m in mol])
    errors = np.zeros(ok.size)
    for k in range(folds):
        test = fold == k
        if not test.any():
            continue
        coef, *_ = np.linalg.lstsq(x[ok[~test]], ip[ok[~test]], rcond=None)
        errors[test] = x[ok[test]] @ coef - ip[ok[test]]
    coef, *_ = np.linalg.lstsq(x[ok], ip[ok], rcond=None)
    return coef, errors, ok.size


def write_estimates(db_dir, table, coef, errors):
    """A part of ``estimate`` values for every ok site, with the model and its cross-validated
    errors (``errors``, from :func:`fit_estimator`) in the part's attributes."""
    x = estimate_features(table)
    ip = x @ coef
    ok = table.sites["ok"] & np.isfinite(ip)
    rows = [(str(table.molecules["key"][table.sites["molecule"][i]]),
             int(table.sites["atom_index"][i]), float(ip[i]), METHODS["estimate"], "ok")
            for i in np.flatnonzero(ok)]
    err = np.abs(errors)
    attrs = {"method": "estimate", "coefficients": [float(c) for c in coef],
             "features": list(FEATURES),
             "reference_sites": int(err.size),
             "cv_median_abs_ev": float(np.median(err)) if err.size else float("nan"),
             "cv_p95_abs_ev": float(np.percentile(err, 95)) if err.size else float("nan")}
    _dir(db_dir).mkdir(exist_ok=True)
    old = [p for p in _dir(db_dir).glob("part-*.h5") if _part_method(p) == "estimate"]
    part = _write_part(_dir(db_dir), rows, attrs)
    for p in old:  # estimates are derived from the Delta-SCF parts: the newest replaces them
        p.unlink()
    return part


def _part_method(path):
    with h5py.File(path, "r") as f:
        return str(f.attrs.get("method", ""))


def join_ionisation(db_dir, molecule_keys, site_molecule, site_atom):
    """Arrays ``(ionisation_energy, ionisation_method)`` for a database's sites: NaN and ``""``
    where no pass has reached a site (an older database)."""
    values = read_ionisation(db_dir)
    names = {v: k for k, v in METHODS.items()}
    ip = np.full(len(site_atom), np.nan, np.float32)
    method = np.full(len(site_atom), "", dtype=object)
    if values:
        for i, (m, a) in enumerate(zip(site_molecule, site_atom)):
            v = values.get((str(molecule_keys[m]), int(a)))
            if v is not None and v[2] == "ok":
                ip[i], method[i] = v[0], names[v[1]]
    return ip, method
