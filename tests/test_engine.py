"""Whole spectrum images: predict_signal (model/inference.py) and the engine (engine.py)."""

from types import SimpleNamespace

import hyperspy.api as hs
import numpy as np
import pytest
import torch

from napari_corefit.engine import EngineResult, dos_features, predict
from napari_corefit.model.inference import Cancelled, predict_signal
from napari_corefit.model.network import Ensemble, PaperMLP
from napari_corefit.model.ood import fit_ood
from napari_corefit.spectra.grids import DOS_GRID
from napari_corefit.spectra.pipeline import PreprocessConfig, preprocess
from napari_corefit.spectra.synthetic import synthetic_si


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    ens = Ensemble([PaperMLP() for _ in range(3)]).eval()
    _, counts, _ = synthetic_si((20,), edge_counts=5000, peak_jitter=0.3, seed=5)
    e = 230.0 + 0.1 * np.arange(1024)
    train = preprocess(e, counts).spectra
    return SimpleNamespace(ensemble=ens, config={}, ood=fit_ood(train, n_components=4))


def _lattice(shape, sep=4.0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape)
    for cy in np.arange(1.5, shape[0], sep):
        for cx in np.arange(1.5, shape[1], sep):
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
    return img


def _si(shape=(6, 8), lazy=False, seed=0):
    """A calibrated SI whose edge strength follows a lattice of columns; one dead pixel."""
    img = _lattice(shape)
    e, counts, _ = synthetic_si(shape, edge_counts=600 + 3000 * img, peak_jitter=0.2, seed=seed)
    counts[0, -1] = 0.0  # no signal at all: masked by preprocessing
    s = hs.signals.Signal1D(counts)
    for ax, name, off in zip(s.axes_manager.navigation_axes, ("x", "y"), (1.0, -2.0)):
        ax.name, ax.units, ax.offset, ax.scale = name, "nm", off, 0.05
    sig = s.axes_manager.signal_axes[0]
    sig.name, sig.units, sig.offset, sig.scale = "Energy loss", "eV", e[0], e[1] - e[0]
    if lazy:
        s = s.as_lazy()
        s.data = s.data.rechunk((2, 3, -1))
    return s, img, e, counts


def test_every_pixel_equals_a_single_spectrum_loop(model):
    s, _, _, counts = _si()
    # the signal's own axis: the pipeline is sensitive to 1e-11 eV axis differences (reported)
    e = s.axes_manager.signal_axes[0].axis
    pred = predict_signal(model, s, device="cpu", chunk_pixels=16)
    ens = model.ensemble
    for iy in range(counts.shape[0]):
        for ix in range(counts.shape[1]):
            res = preprocess(e, counts[iy, ix], PreprocessConfig())
            assert pred.mask[iy, ix] == res.mask
            if not res.mask:
                assert np.isnan(pred.mean[iy, ix]).all()
                continue
            assert pred.peak_energy[iy, ix] == pytest.approx(res.peak_energy, abs=1e-9)
            m, sd = ens.mean_std(torch.from_numpy(res.spectra[None]))
            np.testing.assert_allclose(pred.mean[iy, ix], m[0].numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(pred.std[iy, ix], sd[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not pred.mask[0, -1] and pred.mask.sum() == pred.mask.size - 1
    assert np.nanmax(pred.ood) > 0 and np.isnan(pred.ood[0, -1])


def test_chunking_and_lazy_reading_do_not_change_results(model):
    s, *_ = _si()
    ref = predict_signal(model, s, device="cpu", chunk_pixels=10_000)
    lazy, *_ = _si(lazy=True)
    for sig, chunk, batch in [(s, 1, 3), (s, 17, None), (lazy, 5, 4), (lazy, 10_000, None)]:
        got = predict_signal(model, sig, device="cpu", chunk_pixels=chunk, batch_size=batch)
        for name in ("mean", "std", "ood"):
            np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-5,
                                       atol=1e-7, equal_nan=True)
        np.testing.assert_array_equal(got.mask, ref.mask)


def test_cancel_leaves_no_output(model, tmp_path):
    s, *_ = _si()
    store = tmp_path / "store"
    store.mkdir()
    n = iter(range(100))
    with pytest.raises(Cancelled):
        predict_signal(model, s, device="cpu", chunk_pixels=8, store=store,
                       cancel=lambda: next(n) >= 3)
    assert list(store.iterdir()) == []
    out = tmp_path / "res.hspy"
    with pytest.raises(Cancelled):
        predict(s, model, device="cpu", chunk_pixels=8, cancel=lambda: True)
    assert not out.exists()
    # the memory-mapped store gives the same numbers as the in-memory path
    pred = predict_signal(model, s, device="cpu", chunk_pixels=8, store=store)
    ref = predict_signal(model, s, device="cpu", chunk_pixels=8)
    np.testing.assert_array_equal(pred.mean, ref.mean)
    assert isinstance(pred.dos, np.memmap) and (store / "dos.npy").exists()


def test_progress_is_monotonic_and_ends_at_one(model):
    s, *_ = _si()
    seen = []
    predict(s, model, device="cpu", chunk_pixels=12, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 4


def test_result_signals_keep_axes_and_round_trip(model, tmp_path):
    s, img, *_ = _si()
    res = predict(s, model, adf=img, device="cpu", atoms=True,
                  atom_options={"min_distance": 2, "sum_radius": 2.0})
    for cube in res.curves():
        assert cube.data.shape == (6, 8, 300)
        for a, b in zip(cube.axes_manager.navigation_axes, s.axes_manager.navigation_axes):
            assert (a.name, a.units, a.offset, a.scale) == (b.name, b.units, b.offset, b.scale)
        ea = cube.axes_manager.signal_axes[0]
        assert (ea.name, ea.units, ea.offset, ea.scale, ea.size) == (
            "Energy relative to E_F", "eV", DOS_GRID.start, DOS_GRID.step, DOS_GRID.n)
    for name in ("homo_ev", "lumo_ev", "occupied_-3_0eV", "unoccupied_0_3eV", "sigma_rel",
                 "ood", "quality", "peak_energy_ev", "edge_counts"):
        assert res.maps[name].data.shape == (6, 8), name
    assert res.maps["quality"].data[0, -1] & 1  # the carbon-free pixel is flagged masked
    t = res.atoms_table
    assert list(t.columns[:5]) == ["atom", "y_px", "x_px", "y_nm", "x_nm"]
    assert len(t) == 4  # the 2 x 2 lattice of the 6 x 8 image
    np.testing.assert_allclose(t["y_nm"], -2.0 + 0.05 * t["y_px"])
    np.testing.assert_allclose(t["x_nm"], 1.0 + 0.05 * t["x_px"])
    np.testing.assert_allclose(np.sort(t["y_px"]), [1.5, 1.5, 5.5, 5.5], atol=0.3)
    assert t["usable"].all() and (t["n_pixels"] > 5).all()
    # an atom's summed spectrum is richer than one pixel: the summed raw counts say so
    assert (t["raw_counts"] > 5 * np.asarray(s.data).sum(-1).mean()).all()

    paths = res.save(tmp_path / "out.hspy")
    names = sorted(p.name for p in paths)
    assert names == ["out.hspy", "out_atoms.csv", "out_atoms.hspy", "out_image.hspy",
                     "out_maps.hspy"]
    back = EngineResult.load(tmp_path / "out.hspy")
    np.testing.assert_array_equal(back.occupied.data, res.occupied.data)
    np.testing.assert_array_equal(back.unoccupied_std.data, res.unoccupied_std.data)
    ax = back.occupied.axes_manager
    assert ax.signal_axes[0].name == "Energy relative to E_F"
    assert [(a.name, a.units, a.offset, a.scale) for a in ax.navigation_axes] == \
        [(a.name, a.units, a.offset, a.scale) for a in s.axes_manager.navigation_axes]
    np.testing.assert_array_equal(back.maps["homo_ev"].data, res.maps["homo_ev"].data)
    assert back.maps["homo_ev"].axes_manager[0].units == "nm"
    np.testing.assert_allclose(back.atoms_table["x_nm"], t["x_nm"])
    np.testing.assert_allclose(back.atoms_mean, res.atoms_mean, equal_nan=True)


def test_dos_features_windows_and_nan_rows():
    e = DOS_GRID.values
    occ = np.exp(-(e + 4) ** 2) + 2 * np.exp(-(e + 1) ** 2)
    unocc = np.exp(-(e - 2) ** 2)
    mean = np.stack([np.stack([occ, unocc]), np.full((2, 300), np.nan)])
    f = dos_features(mean, 0.05 * np.abs(mean), DOS_GRID,
                     windows={"occ_lo": ("occupied", -15, -2.5), "un": ("unoccupied", -15, 15)})
    assert f["homo_ev"][0] == pytest.approx(-1.0, abs=0.02)
    assert f["lumo_ev"][0] == pytest.approx(2.0, abs=0.02)
    assert f["gap_ev"][0] == pytest.approx(3.0, abs=0.04)
    assert f["occ_lo"][0] == pytest.approx(1 / 3, abs=0.01)
    assert f["un"][0] == pytest.approx(1.0, abs=1e-3)
    assert all(np.isnan(v[1]) for v in f.values())


def test_lowloss_corrections_reach_pixels_and_atoms(model):
    from napari_corefit.model.inference import predict_spectra
    from napari_corefit.spectra.lowloss import preprocess_with_lowloss

    s, img, *_ = _si(shape=(4, 4))
    # expected counts: exSpy's power-law extrapolation inside the deconvolution fails on noise
    s.data[:] = synthetic_si((4, 4), edge_counts=600 + 3000 * img, noise=False)[1]
    e_ll = -5.0 + 0.1 * np.arange(400)  # the same channel width as the core loss
    zlp = np.exp(-0.5 * (e_ll / 0.3) ** 2) + 0.05 * np.exp(-0.5 * ((e_ll - 15) / 2.0) ** 2)
    ll = hs.signals.Signal1D(np.broadcast_to(1e5 * zlp, (4, 4, 400)).astype(np.float32).copy())
    ax = ll.axes_manager.signal_axes[0]
    ax.offset, ax.scale, ax.units = e_ll[0], 0.1, "eV"
    res = predict(s, model, adf=img, lowloss=ll, device="cpu", atoms=True,
                  atom_options={"min_distance": 2})
    assert res.info["lowloss"]["instrument_fwhm_ev"] == pytest.approx(0.3 * 2.3548, rel=0.1)
    direct, _ = preprocess_with_lowloss(s, ll, PreprocessConfig())
    m, _ = predict_spectra(model, direct.spectra, device="cpu")
    np.testing.assert_allclose(res.occupied.data, m[..., 0, :], rtol=1e-5, atol=1e-7)
    assert len(res.atoms_table) == 1 and res.atoms_table["usable"].all()
