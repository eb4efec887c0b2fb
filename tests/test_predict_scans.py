"""``corefit predict`` on a single spectrum, a line scan and files with no usable pixel.

Every file it writes is read back with ``hs.load`` (named, calibrated axes) and with the
plugin's napari reader; a run that fails or finds no usable pixel writes nothing.
"""

import hyperspy.api as hs
import numpy as np
import pytest
import torch

from eels_files import save_eels
from napari_corefit.cli import main
from napari_corefit.io.napari_reader import get_reader
from napari_corefit.model.checkpoint import save_model
from napari_corefit.model.network import Ensemble, build_network, default_arch
from napari_corefit.spectra.grids import DOS_GRID, SPECTRUM_GRID
from napari_corefit.spectra.pipeline import PreprocessConfig
from napari_corefit.spectra.synthetic import synthetic_si


_save = save_eels


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("scans")
    torch.manual_seed(0)
    arch = default_arch("paper_mlp")
    save_model(d / "model", Ensemble([build_network(arch) for _ in range(2)]),
               {"arch": arch, "input_grid": SPECTRUM_GRID, "output_grid": DOS_GRID,
                "preprocess": PreprocessConfig().to_dict()})
    e, counts, _ = synthetic_si((17,), edge_counts=3000, seed=3)
    _save(d / "single.msa", counts[4], e[0])
    _save(d / "line.hspy", counts, e[0])
    return d


def _predict(d, src, out, *extra):
    return main(["predict", str(src), "--model", str(d / "model"), "--device", "cpu", "-q",
                 "-o", str(out), *extra])


def _named_calibrated(signal):
    for a in signal.axes_manager._axes:
        assert str(a.name) not in ("", "<undefined>"), signal
        assert np.isfinite(a.scale) and a.scale > 0


def test_single_spectrum_gives_curves_and_files_that_open(d, tmp_path, capsys):
    out = tmp_path / "res" / "single.hspy"
    plot = tmp_path / "res" / "single.png"
    assert _predict(d, d / "single.msa", out, "--plot", str(plot)) == 0
    err = capsys.readouterr().err
    assert "corefit predict: 1 pixels" in err
    dos = hs.load(out)
    assert dos.data.shape == (4, 300)
    assert list(dos.metadata.Corefit.curves)[1] == "unoccupied"
    _named_calibrated(dos)
    assert dos.axes_manager.signal_axes[0].units == "eV"
    maps = hs.load(out.with_name("single_maps.hspy"))
    _named_calibrated(maps)
    names = list(maps.metadata.Corefit.maps)
    assert maps.data.shape == (len(names),)
    assert maps.data[names.index("reason")] == 0
    assert 284 < maps.data[names.index("peak_energy_ev")] < 286
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "single.hspy", "single.png", "single_maps.hspy"]
    assert plot.stat().st_size > 10_000
    # the plugin's reader opens both as layers: each curve / map as one pixel
    layers = get_reader(str(out))(str(out))
    assert [kw["name"] for _, kw, _ in layers] == [
        f"single dos {c}" for c in ("occupied", "unoccupied", "occupied_std", "unoccupied_std")]
    assert layers[1][0].shape == (300, 1, 1)
    np.testing.assert_allclose(np.asarray(layers[1][0])[:, 0, 0], dos.data[1])
    mlayers = get_reader(str(out))(str(out.with_name("single_maps.hspy")))
    assert len(mlayers) == len(names) and mlayers[0][0].shape == (1, 1)


def test_line_scan_gives_profiles_and_files_that_open(d, tmp_path, capsys):
    out = tmp_path / "line.hspy"
    assert _predict(d, d / "line.hspy", out, "--plot", str(tmp_path / "line.png")) == 0
    assert "corefit predict: 17 pixels" in capsys.readouterr().err
    dos = hs.load(out)
    assert dos.data.shape == (4, 17, 300)
    _named_calibrated(dos)
    assert dos.axes_manager["x"].scale == 0.25 and dos.axes_manager["x"].units == "nm"
    maps = hs.load(tmp_path / "line_maps.hspy")
    _named_calibrated(maps)
    assert maps.data.shape == (len(maps.metadata.Corefit.maps), 17)
    layers = get_reader(str(out))(str(out))
    assert layers[0][0].shape == (300, 1, 17)
    assert layers[0][1]["scale"] == pytest.approx((0.1, 1.0, 0.25))
    mpath = str(tmp_path / "line_maps.hspy")
    mlayers = get_reader(mpath)(mpath)
    assert mlayers[0][0].shape == (1, 17) and mlayers[0][1]["units"][1] == "nm"
    assert (tmp_path / "line.png").stat().st_size > 10_000


def test_a_failing_plot_leaves_nothing_on_disk(d, tmp_path, monkeypatch, capsys):
    import napari_corefit.model.cli as cli

    def boom(*a, **k):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(cli, "plot_overview", boom)
    out = tmp_path / "o" / "x.hspy"
    assert _predict(d, d / "line.hspy", out, "--plot", str(tmp_path / "o" / "x.png")) == 2
    assert "plot failed" in capsys.readouterr().err
    assert list((tmp_path / "o").iterdir()) == []


def _no_pixel_files(d):
    e, counts, _ = synthetic_si((3, 4), edge_counts=3000, seed=2)
    # a power-law background without an edge (noise-free: no chance false edge)
    nocarbon = np.broadcast_to(1e9 * e ** -3.0, counts.shape).astype(np.float32)
    return {
        "zero.hspy": (np.zeros_like(counts), "12 x total counts <= 0"),
        "constant.hspy": (np.full_like(counts, 50.0), "12 x "),
        "nocarbon.hspy": (nocarbon,
                          "12 x no first peak in the search window"),
        "single_zero.msa": (np.zeros_like(counts[0, 0]), "1 x total counts <= 0"),
    }, e


def test_no_usable_pixel_is_a_refusal_with_reasons(d, tmp_path, capsys):
    files, e = _no_pixel_files(d)
    for name, (data, why) in files.items():
        src = _save(tmp_path / name, data, e[0])
        out = tmp_path / "out" / f"{name}.hspy"
        assert _predict(d, src, out, "--plot", str(tmp_path / "out" / "p.png")) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"corefit: error: {src}: no usable pixel: "), err
        assert why in err[-1], err[-1]
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_summary_line_counts_masked_pixels_per_reason(d, tmp_path, capsys):
    e, counts, _ = synthetic_si((3, 4), edge_counts=3000, seed=2)
    counts[0, :2] = 0
    src = _save(tmp_path / "some.hspy", counts, e[0])
    assert _predict(d, src, tmp_path / "some_out.hspy") == 0
    err = capsys.readouterr().err
    assert "12 pixels (" in err and "2 masked: 2 x total counts <= 0)" in err
