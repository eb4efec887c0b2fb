"""Database storage: crash-safe journals while building, immutable HDF5 shards when done (SPEC 4).

A database is a directory::

    DB/
      qm9-000000-000999.p000.h5     finished shards, immutable (written whole, then renamed)
      .journal/qm9-000000-000999.sqlite   records of a shard still being built (SQLite, WAL)

Molecules go to shards by a deterministic key (:func:`shard_key`): QM9 by blocks of 1000 indices,
SMILES and XYZ by a hash of their key. A build claims the keys it was asked for, journals every
finished molecule at once (a ``kill -9`` loses only molecules in flight) and writes a shard part
from the journal when all of its molecules are done; a rerun skips what any shard or journal holds.
Parts are written in format 4 (compressed compound tables, see :func:`write_shard`); parts of
formats 1-3 are read too (their d-shell DOS weights are ignored, their x, y, z spectrum weights
averaged), and :func:`read_records` gives any part's records to rewrite them. The formats' history
and sizes are in docs/backend.md ("Storage").
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import uuid
import warnings
from pathlib import Path

import h5py
import numpy as np

from napari_corefit.backend.records import (SITE_FIELDS, SPEC_WEIGHT_SCALE, arrays_to_bytes,
                                            bytes_to_arrays, spec_weight)

__all__ = ["shard_key", "Journal", "write_shard", "finished_keys", "journal_keys",
           "merge_databases", "forget_molecules", "upgrade_shards", "recipe_site_counts",
           "flush_journals", "load_database", "read_records", "SiteTable", "FORMAT_VERSION",
           "site_rows"]

FORMAT_VERSION = 4
QM9_BLOCK = 1000
HASH_BUCKETS = 16


def shard_key(molecule_key: str) -> str:
    """Shard name stem of a molecule key.

    Examples
    --------
    >>> shard_key("qm9:001234")
    'qm9-001000-001999'
    >>> shard_key("smiles:CCO")[:8]
    'smiles-h'
    """
    source, _, ident = molecule_key.partition(":")
    if source == "qm9":
        lo = int(ident) // QM9_BLOCK * QM9_BLOCK
        return f"qm9-{lo:06d}-{lo + QM9_BLOCK - 1:06d}"
    bucket = int(hashlib.sha1(molecule_key.encode()).hexdigest(), 16) % HASH_BUCKETS
    return f"{source}-h{bucket:x}"


# --------------------------------------------------------------------------- journal
class Journal:
    """SQLite (WAL) journal of one shard under construction: one row per finished molecule."""

    def __init__(self, db_dir, key):
        self.path = Path(db_dir) / ".journal" / f"{key}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.key = key
        self._con = sqlite3.connect(self.path, timeout=60)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute("CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, "
                          "payload BLOB NOT NULL, written REAL)")
        self._con.execute("CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT)")
        self._con.commit()

    def set_info(self, **items):
        with self._con:
            for k, v in items.items():
                self._con.execute("INSERT OR REPLACE INTO info VALUES (?, ?)", (k, json.dumps(v)))

    def info(self) -> dict:
        return {k: json.loads(v) for k, v in self._con.execute("SELECT name, value FROM info")}

    def add(self, key, arrays):
        """Make one molecule's record durable (committed before this returns)."""
        with self._con:
            self._con.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)",
                              (key, arrays_to_bytes(arrays), time.time()))

    def keys(self) -> set:
        return {k for (k,) in self._con.execute("SELECT key FROM records")}

    def records(self):
        rows = self._con.execute("SELECT key, payload FROM records ORDER BY key").fetchall()
        return [(k, bytes_to_arrays(p)) for k, p in rows]

    def remove(self, keys):
        with self._con:
            self._con.executemany("DELETE FROM records WHERE key = ?", [(k,) for k in keys])

    def close(self):
        self._con.close()

    def delete(self):
        self.close()
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                p.unlink()


# --------------------------------------------------------------------------- shards
def _shard_parts(db_dir, key):
    return sorted(Path(db_dir).glob(f"{key}.p*.h5"))


# Format 4: five compound tables and one JSON document per part, the DOS s, p weights with 7
# significand bits (records.py), one spectrum weight per stick (the orientation average, float16,
# in 1e-3 a.u.); docs/backend.md ("Storage") has the earlier formats and their sizes. Why this
# layout:
# - a compound dataset behind the shuffle filter is split into byte planes per field, so its
#   columns compress as well as separate datasets would, without ~300 bytes of headers each;
# - one chunk per table (up to 1 MiB): small chunks compress worse and need an index;
# - strings (keys, SMILES, site status and stage, equivalent atoms) as one gzipped JSON
#   document: HDF5 variable-length strings cost 16 bytes per value plus a 4 kB heap per file,
#   which is also why string attributes are written fixed-length;
# - meta_block_size=0: no 2 kB metadata blocks preallocated for a file that is written once.
_CHUNK_BYTES = 1 << 20
_MOL_TEXT = ("key", "name", "source", "smiles", "geometry", "status")
_SITE_TEXT = ("site_status", "site_stage", "equivalent")
_STICKS = {"spec": {"spec_energy": np.float16, "spec_weight": np.float16},
           "dos": {"dos_energy": np.float16, "dos_occ": np.uint8, "dos_s": np.float16,
                   "dos_p": np.float16}}


def _table(f, name, columns):
    """Write equal-length columns (each keeps its dtype and row shape) as one compound dataset."""
    n = len(next(iter(columns.values())))
    data = np.empty(n, [(k, v.dtype, v.shape[1:]) for k, v in columns.items()])
    for k, v in columns.items():
        data[k] = v
    opts = dict(chunks=(min(n, max(1, _CHUNK_BYTES // data.itemsize)),), compression="gzip",
                compression_opts=9, shuffle=True) if n else {}
    f.create_dataset(name, data=data, **opts)


def _read_table(ds):
    data = ds[()]
    return {k: np.ascontiguousarray(data[k]) for k in data.dtype.names}


def _set_attr(f, name, value):
    if isinstance(value, str):  # fixed-length UTF-8: a variable-length one costs a 4 kB heap
        b = value.encode()
        f.attrs.create(name, b, dtype=h5py.string_dtype("utf-8", max(1, len(b))))
    else:
        f.attrs[name] = value


def _get_attr(f, name):
    value = f.attrs[name]
    return value.decode() if isinstance(value, bytes) else value


def _software_versions() -> dict:
    """Versions of the packages a shard's numbers depend on (PySCF above all), kept with it."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pyscf", "numpy", "scipy", "napari-corefit"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def write_shard(db_dir, key, records, recipe_dict, extra_attrs=None) -> Path:
    """Write records ``[(molecule_key, arrays), ...]`` as a new immutable shard part.

    Written under a temporary name, flushed to disk and renamed, so a crash leaves either no
    shard or a whole one.
    """
    db_dir = Path(db_dir)
    # a name of this writer's own: a flush and a running build may write parts of one shard at
    # the same moment, and two writers of one temporary file fail (HDF5 file locks)
    tmp = db_dir / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.h5.tmp"
    records = sorted(records, key=lambda kr: kr[0])
    metas = [a["meta"] if isinstance(a["meta"], dict) else json.loads(a["meta"].tobytes())
             for _, a in records]

    def cat(name, dtype, tail=()):
        get = spec_weight if name == "spec_weight" else (lambda a: a[name])
        return (np.concatenate([get(a) for _, a in records]).astype(dtype) if records
                else np.zeros((0,) + tail, dtype))

    n_sites = np.array([a["atom_index"].size for _, a in records], np.int32)
    attrs = {"format_version": FORMAT_VERSION, "recipe": json.dumps(recipe_dict, sort_keys=True),
             "shard_key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "software": json.dumps(_software_versions())}
    attrs.update({k: v if isinstance(v, (int, float, str)) else json.dumps(v)
                  for k, v in (extra_attrs or {}).items()})
    attrs.update(n_molecules=len(records), n_sites=int(n_sites.sum()))
    text = {name: [m[name] for m in metas] for name in _MOL_TEXT + _SITE_TEXT}
    with h5py.File(tmp, "w", libver="latest", meta_block_size=0) as f:
        for k, v in attrs.items():
            _set_attr(f, k, v)
        blob = np.frombuffer(json.dumps(text).encode(), np.uint8)
        f.create_dataset("strings", data=blob, chunks=(min(blob.size, _CHUNK_BYTES),),
                         compression="gzip", compression_opts=9)
        _table(f, "molecules", {
            **{name: np.array([m[name] for m in metas], np.float32)
               for name in ("seconds", "gs_seconds", "fermi_ev")},
            "n_atoms": np.array([a["symbols"].size for _, a in records], np.int32)})
        _table(f, "atoms", {"symbol": cat("symbols", "S2"),
                            "coords": cat("coords", np.float32, (3,))})
        _table(f, "sites", {
            **{name: cat(name, dtype) for name, dtype in SITE_FIELDS.items()},
            "molecule": np.repeat(np.arange(len(records), dtype=np.int32), n_sites),
            "spec_count": cat("spec_count", np.int32), "dos_count": cat("dos_count", np.int32)})
        for table, fields in _STICKS.items():
            _table(f, table, {name: cat(name, dtype) for name, dtype in fields.items()})
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    final = _claim_part_name(db_dir, key, tmp)
    _fsync_dir(db_dir)
    return final


def _claim_part_name(db_dir, key, tmp) -> Path:
    """Move ``tmp`` to the next free part name, atomically: ``os.link`` fails when another
    writer took that number first (then the next one is tried), so no part is ever replaced."""
    while True:
        parts = _shard_parts(db_dir, key)
        n = 1 + max([int(p.suffixes[-2][2:]) for p in parts], default=-1)
        final = db_dir / f"{key}.p{n:03d}.h5"
        try:
            os.link(tmp, final)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: rename (not race-free)
            os.replace(tmp, final)
            return final
        os.unlink(tmp)
        return final


def merge_databases(sources, out_dir) -> list:
    """Copy the finished shard parts of database directories ``sources`` into ``out_dir``.

    Parts are immutable, so a part is never overwritten: one whose name is taken (two machines
    both wrote ``qm9-004000-004999.p000.h5``, say) gets the next free part number of its shard,
    claimed atomically, so a build running in ``out_dir`` may write parts at the same time. A
    part with the same bytes as one already there is skipped, so merging twice adds nothing.
    Returns the paths of the parts written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # one recipe per directory, as for a build (runner._check_same_recipe): refuse up front
    recipes = database_recipes(out_dir)
    for src in sources:
        for r in database_recipes(src):
            if recipes and r not in recipes:
                raise ValueError(f"{src} holds records of another recipe than {out_dir} "
                                 f"(version {r.get('version', '?')} against "
                                 f"{recipes[0].get('version', '?')}); merge into a new directory")
            recipes = recipes or [r]
    written = []
    for src in sources:
        for p in sorted(Path(src).glob("*.h5")):
            key = p.name.split(".p")[0]
            data = p.read_bytes()
            if any(q.stat().st_size == len(data) and q.read_bytes() == data
                   for q in _shard_parts(out_dir, key)):
                continue
            tmp = out_dir / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.h5.tmp"
            tmp.write_bytes(data)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            written.append(_claim_part_name(out_dir, key, tmp))
    _fsync_dir(out_dir)
    return written


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def finished_keys(db_dir, shard=None) -> set:
    """Molecule keys held by finished shards (of one shard key, if given)."""
    keys = set()
    for p in sorted(Path(db_dir).glob(f"{shard}.p*.h5" if shard else "*.h5")):
        with h5py.File(p, "r") as f:
            keys.update(_read_str(f["molecules/key"]) if _format(f) == 1
                        else json.loads(f["strings"][()].tobytes())["key"])
    return keys


def database_recipes(db_dir) -> list:
    """The distinct recipe dicts of a database directory's shard parts and journals."""
    found = []
    for p in sorted(Path(db_dir).glob("*.h5")):
        with h5py.File(p, "r") as f:
            r = _get_attr(f, "recipe")
        found.append(json.loads(r) if isinstance(r, str) else r)
    for p in sorted((Path(db_dir) / ".journal").glob("*.sqlite")):
        j = Journal(db_dir, p.stem)
        r = j.info().get("recipe")
        j.close()
        if r is not None:
            found.append(r)
    distinct = []
    for r in found:
        if r is not None and r not in distinct:
            distinct.append(r)
    return distinct


def recipe_site_counts(db_dir) -> list:
    """``[{"recipe": dict, "n_sites": int}, ...]``: the finished shards' sites by recipe (a
    database that holds the records of an older recipe beside a newer one says so)."""
    counts = {}
    for p in sorted(Path(db_dir).glob("*.h5")) if Path(db_dir).is_dir() else [Path(db_dir)]:
        with h5py.File(p, "r") as f:
            r = _get_attr(f, "recipe")
            n = int(f.attrs["n_sites"]) if "n_sites" in f.attrs else \
                int(_read_part(f)[1]["atom_index"].size)
        key = r if isinstance(r, str) else json.dumps(r, sort_keys=True)
        counts[key] = counts.get(key, 0) + n
    return [{"recipe": json.loads(k), "n_sites": n} for k, n in counts.items()]


def journal_keys(db_dir) -> set:
    keys = set()
    for p in sorted((Path(db_dir) / ".journal").glob("*.sqlite")):
        j = Journal(db_dir, p.stem)
        keys |= j.keys()
        j.close()
    return keys


def flush_journals(db_dir, recipe_dict=None, only=None, delete=False) -> list:
    """Turn journal records into new shard parts (e.g. before committing a running build).

    Records are removed from a journal only after their shard has been renamed into place; a
    crash in between leaves duplicates that :func:`load_database` drops, never a loss. The
    journal files themselves are deleted only with ``delete=True``, which only the build that
    owns them may ask for: a running build may still be writing into a journal that another
    process flushes.
    """
    written = []
    done = finished_keys(db_dir)
    for p in sorted((Path(db_dir) / ".journal").glob("*.sqlite")):
        if only is not None and p.stem not in only:
            continue
        j = Journal(db_dir, p.stem)
        records = j.records()
        recs = [(k, a) for k, a in records if k not in done]
        recipe = recipe_dict or j.info().get("recipe")
        if recs:
            written.append(write_shard(db_dir, p.stem, recs, recipe, j.info().get("attrs")))
        j.remove([k for k, _ in records])
        if delete and not j.keys():
            j.delete()
        else:
            j.close()
    return written


def forget_molecules(db_dir, select) -> tuple:
    """Take molecules out of a database's finished shards, so that the next build computes them
    again (after a fix of the recipe's solver for sites that failed, for example).

    Parameters
    ----------
    db_dir : str or Path
    select : callable
        ``select(key, arrays)`` with a record as :func:`read_records` gives it; True to forget.

    Returns
    -------
    keys : list of str
        The molecules taken out.
    parts : list of Path
        The rewritten shard parts.

    Every part holding a selected molecule is rewritten without it as a new part, and only then
    deleted: a crash in between leaves both, and :func:`load_database` drops the duplicates.
    """
    db_dir = Path(db_dir)
    forgotten, written = [], []
    for p in sorted(db_dir.glob("*.h5")):
        records = read_records(p)
        drop = [k for k, a in records if select(k, a)]
        if not drop:
            continue
        written += _rewrite_part(p, [(k, a) for k, a in records if k not in drop])
        forgotten += drop
    return forgotten, written


def _rewrite_part(p, records) -> list:
    """Replace shard part ``p`` by a new part of ``records`` (none: just delete it).

    The new part is written (in the current format) before the old one is deleted: a crash in
    between leaves both, and :func:`load_database` drops the duplicates. A snapshot holding hard
    links to the old part keeps it unchanged.
    """
    with h5py.File(p, "r") as f:
        key, recipe = _get_attr(f, "shard_key"), _get_attr(f, "recipe")
    recipe = json.loads(recipe) if isinstance(recipe, str) else recipe
    written = [write_shard(p.parent, key, records, recipe)] if records else []
    p.unlink()
    _fsync_dir(p.parent)
    return written


def upgrade_shards(db_dir) -> list:
    """Rewrite every finished part of an older format in the current one; return the new parts.

    Values are those the older part loads as, stored as the current format stores them (format
    4: each spectrum stick's x, y, z parts become their mean with 7 significand bits).
    """
    written = []
    for p in sorted(Path(db_dir).glob("*.h5")):
        with h5py.File(p, "r") as f:
            if _format(f) == FORMAT_VERSION:
                continue
        written += _rewrite_part(p, read_records(p))
    return written


# --------------------------------------------------------------------------- reading
class SiteTable:
    """All sites of a database as numpy arrays (see docs/CONTRACTS.md)."""

    def __init__(self, molecules, sites, sticks, recipe, shards):
        self.molecules = molecules
        self.sites = sites
        self.spec_offsets = sticks["spec_offsets"]
        self.spec_energy = sticks["spec_energy"]
        #: orientation-averaged stick weights (format 4 stores them; older parts their x, y, z)
        self.spec_intensity = sticks["spec_intensity"]
        self.dos_offsets = sticks["dos_offsets"]
        self.dos_energy = sticks["dos_energy"]
        self.dos_s = sticks["dos_s"]
        self.dos_p = sticks["dos_p"]
        self.dos_occupation = sticks["dos_occ"]
        self.recipe = recipe
        self.shards = shards

    @property
    def dos_sp(self):
        return self.dos_s + self.dos_p

    @property
    def dos_occupied(self):
        return self.dos_occupation > 0

    @property
    def n_sites(self):
        return self.sites["atom_index"].size

    @property
    def n_molecules(self):
        return self.molecules["key"].size

    def __len__(self):
        return self.n_sites

    def __repr__(self):
        ok = int(self.sites["ok"].sum()) if self.n_sites else 0
        return (f"<SiteTable {self.n_molecules} molecules, {self.n_sites} sites ({ok} ok), "
                f"{len(self.shards)} shards>")

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.shards:
            h.update(Path(p).name.encode())
            h.update(hashlib.sha256(Path(p).read_bytes()).digest())
        return h.hexdigest()[:16]

    def select(self, mask) -> "SiteTable":
        """Sites where ``mask`` is true (molecules are kept whole; indices stay valid)."""
        idx = np.flatnonzero(np.asarray(mask))
        sites = {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx])
                 for k, v in self.sites.items()}
        sticks = {}
        for prefix, names in (("spec", ("spec_energy", "spec_intensity")),
                              ("dos", ("dos_energy", "dos_s", "dos_p", "dos_occ"))):
            off = getattr(self, f"{prefix}_offsets")
            take = np.concatenate([np.arange(off[i], off[i + 1]) for i in idx]).astype(
                np.int64) if idx.size else np.zeros(0, np.int64)
            counts = off[idx + 1] - off[idx]
            sticks[f"{prefix}_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(
                np.int64)
            for n in names:
                src = self.dos_occupation if n == "dos_occ" else getattr(self, n)
                sticks[n] = src[take]
        return SiteTable(self.molecules, sites, sticks, self.recipe, self.shards)

    def ok(self) -> "SiteTable":
        return self.select(self.sites["ok"])

    def molecule_atoms(self, m):
        """Symbols and coordinates (Angstrom) of molecule ``m``."""
        a, b = self.molecules["atom_offsets"][m], self.molecules["atom_offsets"][m + 1]
        return self.molecules["symbols"][a:b], self.molecules["coords"][a:b]


def _read_str(ds):
    return np.array([v.decode() if isinstance(v, bytes) else v for v in ds[()]], dtype=object)


def _format(f):
    version = int(f.attrs["format_version"])
    if not 1 <= version <= FORMAT_VERSION:
        raise ValueError(f"{f.filename}: shard format {version}; this napari-corefit reads "
                         f"formats 1..{FORMAT_VERSION} (upgrade napari-corefit?)")
    return version


def _offsets(counts, dtype=np.int32):
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(dtype)


def _xyz_to_weight(s):
    """Spectrum weights as format 4 stores them (units of 1e-3 a.u.), from any format.

    Formats 1-3 stored the x, y, z parts of each weight (a.u.): their mean is the weight, not
    rounded here, so that an older part reads as it always did; a part rewritten in format 4
    rounds it (`records.spec_weight`).
    """
    if "spec_xyz" in s:
        s["spec_weight"] = s.pop("spec_xyz").astype(np.float32).mean(axis=1) * np.float32(
            SPEC_WEIGHT_SCALE)


def _read_part(f):
    """Molecule and site arrays of an open shard part (format 1 layout, whatever the format)."""
    if _format(f) == 1:
        mol = {n: _read_str(f[f"molecules/{n}"]) for n in _MOL_TEXT}
        for n in ("seconds", "gs_seconds", "fermi_ev", "atom_offsets", "symbols", "coords"):
            mol[n] = f[f"molecules/{n}"][()]
        s = {n: f[f"sites/{n}"][()] for n in list(SITE_FIELDS) + ["molecule",
             "equivalent_offsets", "equivalent", "spec_offsets", "dos_offsets",
             "spec_energy", "spec_xyz", "dos_energy", "dos_occ", "dos_s", "dos_p"]}
        s["status"] = _read_str(f["sites/status"])
        s["stage"] = _read_str(f["sites/stage"])
        _xyz_to_weight(s)
        return mol, s
    text = json.loads(f["strings"][()].tobytes())
    mol = {n: np.array(text[n], dtype=object) for n in _MOL_TEXT}
    mol.update(_read_table(f["molecules"]))
    atoms = _read_table(f["atoms"])
    mol.update(atom_offsets=_offsets(mol.pop("n_atoms")), symbols=atoms["symbol"],
               coords=atoms["coords"])
    s = _read_table(f["sites"])
    for table in _STICKS:
        s.update(_read_table(f[table]))
        s[f"{table}_offsets"] = _offsets(s.pop(f"{table}_count"))
    s.pop("dos_d", None)  # format 2 kept the d weights
    _xyz_to_weight(s)
    eq = [e for per_molecule in text["equivalent"] for e in per_molecule]
    s["equivalent_offsets"] = _offsets([len(e) for e in eq])
    s["equivalent"] = np.array([i for e in eq for i in e], np.int16)
    for name, field in (("status", "site_status"), ("stage", "site_stage")):
        s[name] = np.array([v for per_molecule in text[field] for v in per_molecule], dtype=object)
    return mol, s


def read_records(path) -> list:
    """Records ``[(molecule_key, arrays), ...]`` of one shard part, as `write_shard` takes them.

    Lets old parts be rewritten in the current format (and tests check round trips).
    """
    with h5py.File(path, "r") as f:
        mol, s = _read_part(f)
    ao, eo = mol["atom_offsets"], s["equivalent_offsets"]
    records = []
    for m, key in enumerate(mol["key"]):
        idx = np.flatnonzero(s["molecule"] == m)  # a molecule's sites are contiguous
        a = {"symbols": mol["symbols"][ao[m]:ao[m + 1]], "coords": mol["coords"][ao[m]:ao[m + 1]]}
        a.update({n: s[n][idx] for n in SITE_FIELDS})
        for prefix, fields in _STICKS.items():
            off = s[f"{prefix}_offsets"]
            a[f"{prefix}_count"] = (off[idx + 1] - off[idx]).astype(np.int32)
            lo, hi = (off[idx[0]], off[idx[-1] + 1]) if idx.size else (0, 0)
            a.update({n: s[n][lo:hi] for n in fields})
        a["meta"] = {n: str(mol[n][m]) for n in _MOL_TEXT}
        a["meta"].update({n: float(mol[n][m]) for n in ("seconds", "gs_seconds", "fermi_ev")})
        a["meta"].update(site_status=[str(v) for v in s["status"][idx]],
                         site_stage=[str(v) for v in s["stage"][idx]],
                         equivalent=[s["equivalent"][eo[i]:eo[i + 1]].tolist() for i in idx])
        records.append((str(key), a))
    return records


def load_database(path) -> SiteTable:
    """Read every finished shard of a database directory (or one shard file).

    Parameters
    ----------
    path : str or Path
        Database directory or a single ``.h5`` shard.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no database at {path}")
    shards = [path] if path.is_file() else sorted(path.glob("*.h5"))
    mol_parts, site_parts, stick_parts, recipes = [], [], [], []
    seen = set()
    for p in shards:
        try:
            f = h5py.File(p, "r")
        except OSError as exc:
            raise OSError(f"{p}: not a readable database shard ({exc})") from None
        with f:
            recipes.append(_get_attr(f, "recipe"))
            mol, s = _read_part(f)
            keys = mol["key"]
            fresh = np.array([k not in seen for k in keys], dtype=bool)
            if not fresh.all():
                warnings.warn(f"{p.name}: {int((~fresh).sum())} molecules already in another "
                              "shard are skipped")
            seen.update(keys)
        mol_parts.append((mol, fresh))
        site_parts.append(s)
    table = _concat(mol_parts, site_parts, recipes, shards, path)
    # C 1s ionisation energies live beside the shards (a database pass, ionisation_store)
    from napari_corefit.backend.ionisation_store import join_ionisation

    table.sites["ionisation_energy"], table.sites["ionisation_method"] = join_ionisation(
        path if path.is_dir() else path.parent, table.molecules["key"], table.sites["molecule"],
        table.sites["atom_index"])
    return table


def _concat(mol_parts, site_parts, recipes, shards, path):
    if len(set(recipes)) > 1:
        warnings.warn(f"{path}: shards were made with {len(set(recipes))} different recipes")
    recipe = json.loads(recipes[0]) if recipes else {}
    molecules = {k: [] for k in ("key", "name", "source", "smiles", "geometry", "status",
                                 "seconds", "fermi_ev", "n_atoms", "n_heavy", "recipe_version")}
    symbols, coords, sites = [], [], {}
    spec_e, spec_x, dos = [], [], {k: [] for k in ("dos_energy", "dos_s", "dos_p", "dos_occ")}
    spec_counts, dos_counts = [], []
    n_mol = 0
    for (mol, fresh), s, part_recipe in zip(mol_parts, site_parts, recipes):
        # which recipe computed each molecule: a database may mix recipes while a newer one is
        # built (each molecule once: `corefit db forget --in`), and metrics are split by it
        version = int(json.loads(part_recipe).get("version", -1)) if part_recipe else -1
        new_index = np.cumsum(fresh) - 1 + n_mol
        off = mol["atom_offsets"]
        for i in np.flatnonzero(fresh):
            for k in ("key", "name", "source", "smiles", "geometry", "status", "seconds",
                      "fermi_ev"):
                molecules[k].append(mol[k][i])
            sym = mol["symbols"][off[i]:off[i + 1]]
            symbols.append(sym)
            coords.append(mol["coords"][off[i]:off[i + 1]])
            molecules["n_atoms"].append(sym.size)
            molecules["n_heavy"].append(int((sym != b"H").sum()))
            molecules["recipe_version"].append(version)
        keep = fresh[s["molecule"]]
        idx = np.flatnonzero(keep)
        for k, v in s.items():
            if k in SITE_FIELDS or k in ("status", "stage"):
                sites.setdefault(k, []).append(v[idx])
        sites.setdefault("molecule", []).append(new_index[s["molecule"][idx]])
        sites.setdefault("fermi", []).append(mol["fermi_ev"][s["molecule"][idx]])
        eqo = s["equivalent_offsets"]
        sites.setdefault("equivalent", []).extend(
            [s["equivalent"][eqo[i]:eqo[i + 1]] for i in idx])
        so, do = s["spec_offsets"], s["dos_offsets"]
        for i in idx:
            spec_e.append(s["spec_energy"][so[i]:so[i + 1]])
            spec_x.append(s["spec_weight"][so[i]:so[i + 1]])
            spec_counts.append(so[i + 1] - so[i])
            for k in dos:
                dos[k].append(s[k][do[i]:do[i + 1]])
            dos_counts.append(do[i + 1] - do[i])
        n_mol += int(fresh.sum())
    out_sites = {k: (np.concatenate(v) if v and k != "equivalent" else v)
                 for k, v in sites.items()}
    if not out_sites:
        out_sites = {k: np.zeros(0, dt) for k, dt in SITE_FIELDS.items()}
        out_sites.update(status=np.zeros(0, object), stage=np.zeros(0, object),
                         molecule=np.zeros(0, np.int64), fermi=np.zeros(0, np.float32),
                         equivalent=[])
    out_sites["ok"] = np.array([st == "ok" for st in out_sites["status"]], dtype=bool)
    out_sites["equivalent"] = list(out_sites["equivalent"])
    mols = {k: np.array(v, dtype=object if k in ("key", "name", "source", "smiles", "geometry",
                                                  "status") else None)
            for k, v in molecules.items()}
    n_atoms = np.array(molecules["n_atoms"], dtype=np.int64)
    mols["atom_offsets"] = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
    mols["symbols"] = np.array([x.decode() for x in np.concatenate(symbols)], dtype="U2") \
        if symbols else np.zeros(0, "U2")
    mols["coords"] = np.concatenate(coords).astype(np.float64) if coords else np.zeros((0, 3))

    def cat(parts, shape_tail=(), dtype=np.float32):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros((0,) + shape_tail,
                                                                          dtype)

    sticks = {
        "spec_offsets": np.concatenate([[0], np.cumsum(spec_counts)]).astype(np.int64),
        "spec_energy": cat(spec_e),
        "spec_intensity": cat(spec_x) / np.float32(SPEC_WEIGHT_SCALE),  # a.u. as before
        "dos_offsets": np.concatenate([[0], np.cumsum(dos_counts)]).astype(np.int64),
        "dos_energy": cat(dos["dos_energy"]),
        "dos_s": cat(dos["dos_s"]),
        "dos_p": cat(dos["dos_p"]),
        "dos_occ": cat(dos["dos_occ"], dtype=np.uint8),
    }
    for k in ("excitation_energy", "core_1s", "fermi", "hole_population", "s2", "seconds"):
        out_sites[k] = out_sites[k].astype(np.float32)
    return SiteTable(mols, out_sites, sticks, recipe, [str(p) for p in shards])


def site_rows(table):
    """One dict per site (the ``db info --json`` schema)."""
    s, m = table.sites, table.molecules
    for i in range(table.n_sites):
        mol = int(s["molecule"][i])
        yield {
            "molecule": str(m["name"][mol]),
            "key": str(m["key"][mol]),
            "smiles": str(m["smiles"][mol]),
            "atom_index": int(s["atom_index"][i]),
            "multiplicity": int(s["multiplicity"][i]),
            "equivalent_atoms": [int(a) for a in s["equivalent"][i]],
            "excitation_energy_ev": _num(s["excitation_energy"][i]),
            "core_1s_ev": _num(s["core_1s"][i]),
            "fermi_ev": _num(s["fermi"][i]),
            "hole_population": _num(s["hole_population"][i]),
            "s2": _num(s["s2"][i]),
            "status": str(s["status"][i]),
            "solver": str(s["stage"][i]),
            "seconds": _num(s["seconds"][i]),
            "ionisation_energy_ev": _num(s["ionisation_energy"][i])
            if "ionisation_energy" in s else None,
            "ionisation_method": str(s["ionisation_method"][i]) if "ionisation_method" in s
            else "",
        }


def _num(x):
    x = float(x)
    return None if not np.isfinite(x) else round(x, 4)
