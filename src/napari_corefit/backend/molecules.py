"""Molecule sources: QM9 (qm9pack), SMILES (RDKit ETKDG + GFN2-xTB) and XYZ files.

Every :class:`Molecule` keeps where it came from and how its geometry was made, because the
database records it per molecule (SPEC section 1.1).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Molecule",
    "qm9_table",
    "qm9_molecules",
    "read_xyz",
    "read_xyz_bundle",
    "write_xyz_bundle",
    "read_smiles_file",
]

HEAVY = {"C", "N", "O", "F"}


@dataclass
class Molecule:
    """A molecule with its geometry (Angstrom) and provenance.

    ``key`` is unique and deterministic (``qm9:000123``, ``smiles:<canonical>``,
    ``xyz:<stem>``); it decides the database shard the molecule belongs to.
    """

    key: str
    name: str
    symbols: list
    coords: np.ndarray
    source: str
    smiles: str = ""
    geometry: str = ""  # how the coordinates were made
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.coords = np.asarray(self.coords, dtype=np.float64).reshape(-1, 3)
        self.symbols = [str(s) for s in self.symbols]
        if len(self.symbols) != len(self.coords):
            raise ValueError(f"{self.name}: {len(self.symbols)} symbols but "
                             f"{len(self.coords)} coordinates")

    @property
    def n_atoms(self) -> int:
        return len(self.symbols)

    @property
    def n_heavy(self) -> int:
        return sum(s != "H" for s in self.symbols)

    @property
    def carbons(self) -> list:
        return [i for i, s in enumerate(self.symbols) if s == "C"]

    def pyscf_atoms(self, labels=None):
        """PySCF ``atom`` list; ``labels`` may rename atoms (``{i: "C@1"}``) for their own basis."""
        labels = labels or {}
        return [(labels.get(i, s), tuple(c)) for i, (s, c) in enumerate(zip(self.symbols,
                                                                          self.coords))]

    def to_xyz(self) -> str:
        lines = [str(self.n_atoms), f"{self.key} {self.smiles}".strip()]
        lines += [f"{s:2s} {x:14.8f} {y:14.8f} {z:14.8f}" for s, (x, y, z) in
                  zip(self.symbols, self.coords)]
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_xyz(cls, path) -> "Molecule":
        return read_xyz(path)

    @classmethod
    def from_smiles(cls, smiles: str, name: str | None = None, optimise: str = "xtb",
                    seed: int = 0xC0FE) -> "Molecule":
        """Embed a SMILES with RDKit ETKDG and optimise it (``"xtb"``: GFN2-xTB; ``"mmff"``).

        MMFF alone gives CO2 a C=O bond of 1.405 A (SPEC section 1.1); GFN2-xTB is the default.
        """
        from rdkit import Chem
        from rdkit.Chem import AllChem

        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(f"cannot parse SMILES {smiles!r}")
        canonical = Chem.MolToSmiles(mol)
        mol = Chem.AddHs(mol)
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise ValueError(f"RDKit could not embed {smiles!r} in 3-D")
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
        symbols = [a.GetSymbol() for a in mol.GetAtoms()]
        coords = mol.GetConformer().GetPositions()
        how = "rdkit-etkdg+mmff"
        if optimise == "xtb":
            coords = optimise_xtb(symbols, coords, charge=Chem.GetFormalCharge(mol))
            how = "rdkit-etkdg+mmff+gfn2-xtb"
        return cls(key=f"smiles:{canonical}", name=name or canonical, symbols=symbols,
                   coords=coords, source="smiles", smiles=canonical, geometry=how)

    @classmethod
    def from_qm9(cls, index: int) -> "Molecule":
        table = qm9_table()
        row = np.searchsorted(table["index"], index)
        if row >= len(table["index"]) or table["index"][row] != index:
            raise ValueError(f"QM9 has no molecule with index {index}")
        return _qm9_molecule(table, row)


def optimise_xtb(symbols, coords, charge=0, fmax=0.01, steps=500):
    """Relax a geometry with GFN2-xTB (tblite) and ASE's BFGS; returns Angstrom coordinates."""
    from ase import Atoms
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    atoms = Atoms(symbols=symbols, positions=coords)
    atoms.calc = TBLite(method="GFN2-xTB", charge=charge, verbosity=0)
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    return atoms.get_positions()


# ------------------------------------------------------------------------- QM9
def _qm9_data_dir() -> Path:
    # qm9pack's __init__ imports pkg_resources: find its data without importing it (SPEC 1.1)
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("QM9 needs the qm9pack package: pip install 'napari-corefit[backend]'")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "napari-corefit"
    path.mkdir(parents=True, exist_ok=True)
    return path


_QM9 = None


def qm9_table() -> dict:
    """The QM9 table as compact arrays (index, smiles, n_atoms, n_heavy, symbols, coords).

    The 225 MB of CSV in qm9pack are parsed once and cached as a 20 MB ``.npz`` in the user cache.
    """
    global _QM9
    if _QM9 is not None:
        return _QM9
    cache = _cache_dir() / "qm9_index.npz"
    if not cache.exists():
        import pandas as pd

        parts = sorted(_qm9_data_dir().glob("qm9_part*.csv"))
        df = pd.concat([pd.read_csv(p, usecols=["Index", "SMILES", "N_atoms", "Elements",
                                                 "XYZ_Ang"]) for p in parts],
                       ignore_index=True).sort_values("Index")
        symbols = [ast.literal_eval(e) for e in df["Elements"]]
        coords = [np.asarray(ast.literal_eval(x), dtype=np.float64) for x in df["XYZ_Ang"]]
        n_atoms = df["N_atoms"].to_numpy(np.int16)
        offsets = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
        flat_sym = np.array([s for ss in symbols for s in ss], dtype="U2")
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(
            tmp, index=df["Index"].to_numpy(np.int64), smiles=df["SMILES"].to_numpy(str),
            n_atoms=n_atoms, offsets=offsets, symbols=flat_sym,
            coords=np.concatenate(coords).astype(np.float64),
        )
        os.replace(tmp, cache)
    with np.load(cache) as z:
        table = {k: z[k] for k in z.files}
    sym = table["symbols"]
    heavy = (sym != "H").astype(np.int64)
    csum = np.concatenate([[0], np.cumsum(heavy)])
    table["n_heavy"] = (csum[table["offsets"][1:]] - csum[table["offsets"][:-1]]).astype(np.int16)
    is_c = np.concatenate([[0], np.cumsum(sym == "C")])
    table["n_carbon"] = (is_c[table["offsets"][1:]] - is_c[table["offsets"][:-1]]).astype(np.int16)
    _QM9 = table
    return table


def _qm9_molecule(table, row) -> Molecule:
    a, b = table["offsets"][row], table["offsets"][row + 1]
    index = int(table["index"][row])
    return Molecule(key=f"qm9:{index:06d}", name=f"qm9_{index:06d}",
                    symbols=list(table["symbols"][a:b]), coords=table["coords"][a:b],
                    source="qm9", smiles=str(table["smiles"][row]),
                    geometry="qm9 (B3LYP/6-31G(2df,p))")


def qm9_molecules(ids=None, min_heavy=None, max_heavy=None, min_atoms=None, max_atoms=None,
                  elements=None, sample=None, seed=0, limit=None, require_carbon=True):
    """Select QM9 molecules; returns a list of :class:`Molecule` in QM9 index order.

    Parameters
    ----------
    ids : (int, int), optional
        Inclusive QM9 index range.
    min_heavy, max_heavy, min_atoms, max_atoms : int, optional
        Heavy-atom and total-atom (H included) bounds, inclusive.
    elements : set of str, optional
        Only molecules whose elements are all in this set.
    sample : int, optional
        A random sample of this many of the selected molecules (``seed``), kept in index order.
    limit : int, optional
        At most this many (after sampling).
    """
    t = qm9_table()
    keep = np.ones(t["index"].size, dtype=bool)
    if ids is not None:
        keep &= (t["index"] >= ids[0]) & (t["index"] <= ids[1])
    if min_heavy is not None:
        keep &= t["n_heavy"] >= min_heavy
    if max_heavy is not None:
        keep &= t["n_heavy"] <= max_heavy
    if min_atoms is not None:
        keep &= t["n_atoms"] >= min_atoms
    if max_atoms is not None:
        keep &= t["n_atoms"] <= max_atoms
    if require_carbon:
        keep &= t["n_carbon"] > 0
    rows = np.flatnonzero(keep)
    if elements is not None:
        allowed = set(elements)
        rows = np.array([r for r in rows if set(t["symbols"][t["offsets"][r]:t["offsets"][r + 1]])
                         <= allowed], dtype=np.int64)
    if sample is not None and sample < rows.size:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=sample, replace=False))
    if limit is not None:
        rows = rows[:limit]
    return [_qm9_molecule(t, r) for r in rows]


# ------------------------------------------------------------------------- XYZ
def _parse_xyz_block(lines, name, path):
    try:
        n = int(lines[0].split()[0])
        comment = lines[1].strip() if len(lines) > 1 else ""
        symbols, coords = [], []
        for line in lines[2:2 + n]:
            parts = line.split()
            symbols.append(parts[0].capitalize())
            coords.append([float(v.replace("*^", "e")) for v in parts[1:4]])
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{path}: not a valid XYZ block ({exc})") from None
    if len(symbols) != n:
        raise ValueError(f"{path}: XYZ header says {n} atoms, found {len(symbols)}")
    return comment, symbols, np.array(coords)


def read_xyz(path) -> Molecule:
    """One molecule per XYZ file, named by the file's stem."""
    path = Path(path)
    lines = path.read_text().splitlines()
    comment, symbols, coords = _parse_xyz_block(lines, path.stem, path)
    return Molecule(key=f"xyz:{path.stem}", name=path.stem, symbols=symbols, coords=coords,
                    source="xyz", smiles="", geometry=f"xyz file {path.name} (as given)")


def write_xyz_bundle(molecules, path):
    """Write molecules as concatenated XYZ blocks; the comment line holds key, source and SMILES.

    A bundle carries a selection of QM9 to a build machine that has no qm9pack (a few hundred
    bytes per molecule instead of the 104 MB wheel).
    """
    with open(path, "w") as fh:
        for m in molecules:
            fh.write(f"{m.n_atoms}\n{m.key}\t{m.source}\t{m.smiles}\t{m.geometry}\n")
            for s, (x, y, z) in zip(m.symbols, m.coords):
                fh.write(f"{s} {x:.8f} {y:.8f} {z:.8f}\n")


def read_xyz_bundle(path) -> list:
    """Read :func:`write_xyz_bundle` output back into molecules with their provenance."""
    lines = Path(path).read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i].split()[0])
        block = lines[i:i + 2 + n]
        comment, symbols, coords = _parse_xyz_block(block, "", path)
        key, source, smiles, geometry = (comment.split("\t") + ["", "", "", ""])[:4]
        name = key.replace(":", "_")
        out.append(Molecule(key=key, name=name, symbols=symbols, coords=coords,
                            source=source or "xyz", smiles=smiles, geometry=geometry))
        i += 2 + n
    return out


def read_smiles_file(path, optimise="xtb") -> list:
    """One SMILES per line, optionally followed by a name after a space.

    A line starting with ``#``, or text after a ``#`` that follows whitespace, is a comment
    (``#`` inside a SMILES is a triple bond). Repeated molecules are read once.
    """
    out, seen = [], set()
    for line in Path(path).read_text().splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        mol = Molecule.from_smiles(parts[0], name=parts[1].strip() if len(parts) > 1 else None,
                                   optimise=optimise)
        if mol.key not in seen:
            seen.add(mol.key)
            out.append(mol)
    return out
