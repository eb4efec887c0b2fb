"""Per-atom spectra: which pixels belong to which column, and their summed raw counts.

Counts are summed before any preprocessing, so that a column's spectrum has the column's full
dose (Poisson noise falls as 1/sqrt(pixels)) and then goes through the same preprocessing and
model as a single pixel does.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

__all__ = ["assign_pixels", "AtomSums"]


def assign_pixels(shape, y, x, radius=None):
    """Label every pixel with the column it belongs to.

    Each pixel goes to its nearest column (its Voronoi cell); with ``radius`` only pixels
    within ``radius`` of that column count (a disk, clipped by the cell, so no pixel is shared).

    Parameters
    ----------
    shape : (ny, nx)
    y, x : array_like, shape (n_atoms,)
        Column positions in pixels.
    radius : float, optional
        Pixels; None takes the whole Voronoi cell.

    Returns
    -------
    labels : ndarray of int32, shape (ny, nx)
        Column index, -1 for pixels of no column.

    Examples
    --------
    >>> assign_pixels((1, 7), [0, 0], [1, 5], radius=1)
    array([[ 0,  0,  0, -1,  1,  1,  1]], dtype=int32)
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    labels = np.full(shape, -1, np.int32)
    if y.size == 0:
        return labels
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    dist, idx = cKDTree(np.c_[y, x]).query(np.c_[yy.ravel(), xx.ravel()])
    if radius is not None:
        idx = np.where(dist <= radius, idx, -1)
    labels[...] = idx.reshape(shape)
    return labels


class AtomSums:
    """Accumulates the summed spectra of every column, one block of rows at a time.

    Feed it the blocks the engine reads anyway (``add(r0, r1, counts)``), so that a lazy SI is
    read once for pixels and atoms together.

    Examples
    --------
    >>> labels = np.array([[0, 0, 1], [-1, 1, 1]])
    >>> acc = AtomSums(labels, 2)
    >>> acc.add(0, 2, np.ones((2, 3, 4)))
    >>> acc.counts[:, 0], acc.n_pixels
    (array([2., 3.]), array([2, 3]))
    """

    def __init__(self, labels, n_atoms):
        self.labels = np.asarray(labels)
        self.n_atoms = int(n_atoms)
        self.counts = None
        self.n_pixels = np.bincount(self.labels[self.labels >= 0].ravel(),
                                    minlength=self.n_atoms).astype(np.int64)

    def add(self, r0, r1, counts):
        """Add the block of rows ``r0:r1`` (counts shape (r1 - r0, nx, n_channels))."""
        counts = np.asarray(counts)
        flat = counts.reshape(-1, counts.shape[-1])
        lab = self.labels[r0:r1].ravel()
        if self.counts is None:
            self.counts = np.zeros((self.n_atoms, flat.shape[1]), np.float64)
        keep = np.flatnonzero(lab >= 0)
        if keep.size == 0:
            return
        # a sparse (atoms x pixels) indicator times the block sums each cell in one product
        ind = sparse.csr_matrix((np.ones(keep.size), (lab[keep], keep)),
                                shape=(self.n_atoms, flat.shape[0]))
        self.counts += ind @ np.nan_to_num(flat.astype(np.float64, copy=False))
