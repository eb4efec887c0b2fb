"""Metrics on known vectors, splits by molecule, the noise model."""

import numpy as np
import pytest

from napari_corefit.spectra.grids import DOS_GRID, area_normalise, broaden
from napari_corefit.training import metrics
from napari_corefit.training.noise import NOISE_AXIS, NoiseModel, parse_counts, simulate_counts
from napari_corefit.training.splits import (extrapolation_split, make_split, random_split,
                                            split_from_dict)

E = DOS_GRID.values


def _curves(centres):
    """(m, 2, 300) area-normalised Gaussians at the given (occupied, unoccupied) centres."""
    out = np.stack([[broaden([c], [1.0], E) for c in pair] for pair in centres])
    return area_normalise(out, DOS_GRID.step)


def test_metrics_of_identical_curves():
    t = _curves([(-5.0, 3.0), (-8.0, 1.0)])
    s, per = metrics.score(t, t)
    assert max(s["mse_occupied"], s["mse_unoccupied"], s["mse_total"]) < 1e-30
    assert s["cosine_median_occupied"] == pytest.approx(1.0)
    assert s["peak_within_0p5ev_fraction"] == 1.0


def test_metrics_of_shifted_curves():
    t = _curves([(-5.0, 3.0)] * 4)
    # occupied exact, unoccupied shifted by 0.3, 0.6, 1.0, 2.0 eV
    p = _curves([(-5.0, 3.3), (-5.0, 3.6), (-5.0, 4.0), (-5.0, 5.0)])
    s, per = metrics.score(p, t)
    np.testing.assert_allclose(per["peak_error_ev"][:, 1], [0.3, 0.6, 1.0, 2.0], atol=1e-9)
    assert s["peak_within_0p5ev_fraction_unoccupied"] == 0.25
    assert s["peak_within_0p5ev_fraction_occupied"] == 1.0
    assert s["peak_within_0p5ev_fraction"] == pytest.approx(5 / 8)
    # cosine of two unit-area Gaussians (sigma 0.5) shifted by d: exp(-d^2 / (4 sigma^2))
    np.testing.assert_allclose(per["cosine"][:, 1], np.exp(-np.array([0.3, 0.6, 1, 2]) ** 2),
                               rtol=1e-6)
    assert s["mse_occupied"] < 1e-30 and s["mse_unoccupied"] > 1e-4
    # MSE is the mean over points of the squared difference of the normalised curves
    assert s["mse_unoccupied"] == pytest.approx(((p - t)[:, 1] ** 2).mean())


def test_predictions_are_clipped_and_renormalised_before_scoring():
    t = _curves([(-5.0, 3.0)])
    p = 3.0 * t - 0.01  # wrong scale and slightly negative tails
    s, _ = metrics.score(p, t)
    assert s["cosine_median_occupied"] > 0.999
    assert s["mse_occupied"] < 1e-5


def test_calibration_counts_truth_inside_two_sigma():
    t = np.zeros((1, 2, 300))
    pred = np.zeros((1, 2, 300))
    t[..., :150] = 1.0  # half the points off by 1
    std = np.full((1, 2, 300), 0.6)  # 2 sigma = 1.2 covers them
    s = metrics.summarise(metrics.per_curve_scores(pred + 1e-3, t + 1e-3), std=std, pred=pred,
                          truth=t)
    assert s["calibration_2sigma"] == 1.0
    s = metrics.summarise(metrics.per_curve_scores(pred + 1e-3, t + 1e-3), std=std / 2,
                          pred=pred, truth=t)
    assert s["calibration_2sigma"] == 0.5


def _keys(n):
    return [f"qm9:{i:06d}" for i in range(n)]


def test_median_interval_resamples_whole_molecules():
    rng = np.random.default_rng(0)
    # 200 molecules of 5 near-identical sites: the molecules, not the sites, are the samples
    groups = np.repeat(np.arange(200), 5)
    values = 0.95 + 0.02 * rng.standard_normal(200)[groups] + 1e-4 * rng.standard_normal(1000)
    lo, hi = metrics.median_interval(values, groups)
    assert lo < np.median(values) < hi
    # treating every site as independent pretends 5x the data: an interval ~sqrt(5) narrower
    lo1, hi1 = metrics.median_interval(values, np.arange(1000))
    assert 1.7 < (hi - lo) / (hi1 - lo1) < 3.0
    # repeatable (seeded), and NaN scores are left out rather than poisoning the median
    assert metrics.median_interval(values, groups) == (lo, hi)
    with_nan = np.append(values, np.nan)
    assert metrics.median_interval(with_nan, np.append(groups, 999)) == (lo, hi)
    with pytest.raises(ValueError, match="1-D of one length"):
        metrics.median_interval(values, groups[:-1])


def test_random_split_is_by_molecule_disjoint_and_stable_when_the_database_grows():
    keys = _keys(2000)
    s = random_split(keys, seed=3)
    parts = [set(s.train), set(s.val), set(s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, parts)) == 2000
    assert 0.75 < len(s.train) / 2000 < 0.85 and 0.07 < len(s.test) / 2000 < 0.13
    # sites follow their molecule: no molecule has sites in two parts
    site_mol = np.repeat(np.arange(2000), 3)
    masks = [s.site_mask(p, site_mol) for p in ("train", "val", "test")]
    assert (np.sum(masks, axis=0) == 1).all()
    # a larger database keeps every old molecule in its part
    big = random_split(_keys(3000), seed=3)
    assert set(s.test) <= set(big.test) and set(s.train) <= set(big.train)
    assert set(random_split(keys, seed=4).test) != set(s.test)
    rebuilt = split_from_dict(s.settings(), keys)
    np.testing.assert_array_equal(rebuilt.test, s.test)


def test_extrapolation_splits_follow_atom_counts():
    keys = _keys(600)
    n_atoms = np.arange(600) % 30 + 1
    s = extrapolation_split(keys, n_atoms)
    assert n_atoms[np.r_[s.train, s.val]].max() <= 20
    assert set(n_atoms[s.test]) == set(range(21, 27))
    assert not set(s.train) & set(s.val)
    v = make_split("extrapolation_18_20", keys, n_atoms)
    assert set(n_atoms[np.r_[v.train, v.val]]) == {18, 19, 20}
    np.testing.assert_array_equal(v.test, s.test)
    eligible = n_atoms != 22
    s2 = make_split("extrapolation", keys, n_atoms, eligible=eligible)
    assert 22 not in set(n_atoms[s2.test])
    with pytest.raises(ValueError, match="atom counts"):
        make_split("extrapolation", keys)


def test_parse_counts():
    assert parse_counts("1e4") == 1e4
    assert parse_counts("inf") is None and parse_counts(None) is None
    with pytest.raises(ValueError):
        parse_counts("-5")


def test_simulated_counts_have_the_asked_edge_counts_and_background_ratio():
    e = NOISE_AXIS.values
    ref = np.array([285.0, 288.0])
    edge = np.stack([broaden([r, r + 5], [1.0, 2.0], e) for r in ref])
    model = NoiseModel(counts=1e5, signal_to_background=0.5, background_exponent=3.0)
    c = simulate_counts(edge, ref, model, np.random.default_rng(0))
    assert c.shape == edge.shape and c.dtype == np.float32
    assert (c == np.round(c)).all() and (c >= 0).all()
    # the pre-edge is pure power-law background, falling with exponent 3
    pre1, pre2 = c[:, (e >= 250) & (e < 255)].sum(1), c[:, (e >= 270) & (e < 275)].sum(1)
    np.testing.assert_allclose(pre1 / pre2, ((252.5 / 272.5) ** -3.0), rtol=0.05)
    for i, r in enumerate(ref):
        # N edge counts and half as many... twice as many background counts in the window
        inside = (e >= r - 1) & (e < r + 15)
        assert c[i, inside].sum() == pytest.approx(1e5 + 1e5 / 0.5, rel=0.01)
    a = simulate_counts(edge, ref, model, np.random.default_rng(1))
    assert not np.array_equal(a, c)  # a fresh draw per call
    with pytest.raises(ValueError, match="counts set"):
        simulate_counts(edge, ref, NoiseModel(), np.random.default_rng(0))
    assert NoiseModel.from_dict(model.to_dict()) == model
