"""Symmetry-equivalent carbons: computed once, carried with a multiplicity (SPEC section 1).

Two carbons are equivalent when RDKit gives them the same canonical rank (graph symmetry, from the
connectivity perceived in the 3-D geometry) *and* their sorted distances to every element agree
within a tolerance (so that diastereotopic or conformationally distinct carbons stay apart).
"""

from __future__ import annotations

import numpy as np

__all__ = ["equivalent_carbons"]


def _graph_ranks(symbols, coords):
    try:
        from rdkit import Chem
        from rdkit.Chem import rdDetermineBonds

        block = f"{len(symbols)}\n\n" + "\n".join(
            f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(symbols, coords))
        mol = Chem.MolFromXYZBlock(block)
        rdDetermineBonds.DetermineConnectivity(mol)
        return np.array(list(Chem.CanonicalRankAtoms(mol, breakTies=False)))
    except Exception:  # noqa: BLE001 - without RDKit the distance test alone decides
        return np.zeros(len(symbols), dtype=int)


def equivalent_carbons(symbols, coords, tol=0.02):
    """Group carbons into symmetry classes.

    Parameters
    ----------
    symbols : list of str
    coords : ndarray, shape (n, 3), Angstrom
    tol : float
        Largest difference (Angstrom) between matching sorted distances.

    Returns
    -------
    classes : list of list of int
        Atom indices per class; the first index represents the class (computed once).

    Examples
    --------
    >>> sym = ["C", "C", "H", "H", "H", "H", "H", "H"]
    >>> xyz = np.array([[0, 0, 0.765], [0, 0, -0.765], [1.02, 0, 1.16], [-.51, .88, 1.16],
    ...                 [-.51, -.88, 1.16], [-1.02, 0, -1.16], [.51, -.88, -1.16],
    ...                 [.51, .88, -1.16]])
    >>> equivalent_carbons(sym, xyz)
    [[0, 1]]
    """
    symbols = list(symbols)
    coords = np.asarray(coords, dtype=np.float64)
    ranks = _graph_ranks(symbols, coords)
    dist = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    elements = sorted(set(symbols))
    sym = np.array(symbols)

    def signature(i):
        return [np.sort(dist[i, sym == e]) for e in elements]

    carbons = [i for i, s in enumerate(symbols) if s == "C"]
    classes = []
    for i in carbons:
        sig_i = signature(i)
        for cls in classes:
            j = cls[0]
            if ranks[i] != ranks[j]:
                continue
            if all(np.abs(a - b).max(initial=0) <= tol for a, b in zip(sig_i, signature(j))):
                cls.append(i)
                break
        else:
            classes.append([i])
    return classes
