"""Atom columns (atoms/find.py) and per-atom sums (atoms/spectra.py)."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_corefit.atoms.find import estimate_separation, find_atoms
from napari_corefit.atoms.spectra import AtomSums, assign_pixels


def _lattice_image(seed=0, shape=(96, 96), sep=8.0, width=1.5, peak=60.0, bg=15.0):
    """Gaussian columns on a jittered square lattice, Poisson noise (an ADF-like image)."""
    rng = np.random.default_rng(seed)
    gy, gx = np.mgrid[4:shape[0] - 3:sep, 4:shape[1] - 3:sep]
    ty = gy.ravel() + rng.uniform(-1.5, 1.5, gy.size)
    tx = gx.ravel() + rng.uniform(-1.5, 1.5, gx.size)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.full(shape, bg)
    for a, b in zip(ty, tx):
        img += peak * np.exp(-((yy - a) ** 2 + (xx - b) ** 2) / (2 * width ** 2))
    return rng.poisson(img).astype(np.float64), np.c_[ty, tx]


@pytest.mark.parametrize("refine", ["gaussian", "com"])
def test_recovers_known_positions_within_half_a_pixel(refine):
    img, truth = _lattice_image()
    found = find_atoms(img, refine=refine)
    dist, _ = cKDTree(np.c_[found["y"], found["x"]]).query(truth)
    assert np.mean(dist < 0.5) >= 0.95
    assert abs(len(found) - len(truth)) <= 0.05 * len(truth)  # no crowd of false columns
    assert np.all((found["quality"] >= 0) & (found["quality"] <= 1))


def test_gaussian_fit_beats_integer_maxima():
    img, truth = _lattice_image(seed=3)
    err = {}
    for refine in (None, "gaussian"):
        f = find_atoms(img, refine=refine)
        err[refine] = np.median(cKDTree(np.c_[f["y"], f["x"]]).query(truth)[0])
    assert err["gaussian"] < 0.6 * err[None]


def test_separation_estimate_and_quality_of_empty_region():
    img, _ = _lattice_image(seed=1, sep=10.0)
    assert 9.0 < estimate_separation(img) < 11.0
    img[:, 48:] = np.random.default_rng(0).poisson(15.0, img[:, 48:].shape)  # no columns there
    found = find_atoms(img, min_distance=5)
    assert found["x"].max() < 50  # noise maxima stay under the threshold


def test_assign_pixels_voronoi_and_radius():
    labels = assign_pixels((5, 10), [2.0, 2.0], [2.0, 7.0])
    assert (labels[:, :5] == 0).all() and (labels[:, 5:] == 1).all()
    disk = assign_pixels((5, 10), [2.0, 2.0], [2.0, 7.0], radius=1.0)
    assert (disk == 0).sum() == 5 and (disk == 1).sum() == 5 and (disk == -1).sum() == 40


def test_atom_sums_equal_direct_sums_in_any_blocks():
    rng = np.random.default_rng(0)
    data = rng.poisson(5.0, (6, 7, 11)).astype(np.float32)
    labels = assign_pixels((6, 7), [1.0, 4.0, 4.5], [1.0, 1.5, 5.0], radius=2.5)
    expected = np.stack([data[labels == k].sum(0) for k in range(3)])
    for rows in (1, 4, 6):
        acc = AtomSums(labels, 3)
        for r0 in range(0, 6, rows):
            acc.add(r0, min(r0 + rows, 6), data[r0:r0 + rows])
        np.testing.assert_allclose(acc.counts, expected)
    assert list(acc.n_pixels) == [(labels == k).sum() for k in range(3)]
