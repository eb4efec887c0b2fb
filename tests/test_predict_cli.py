"""``corefit predict`` end to end on tiny files."""

import hyperspy.api as hs
import numpy as np
import pandas as pd
import pytest
import torch

from napari_corefit.cli import main
from napari_corefit.model.checkpoint import save_model
from napari_corefit.model.network import Ensemble, build_network, default_arch
from napari_corefit.spectra.grids import DOS_GRID, SPECTRUM_GRID
from napari_corefit.spectra.pipeline import PreprocessConfig
from napari_corefit.spectra.synthetic import synthetic_si


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    yy, xx = np.mgrid[:8, :8]
    adf = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
              for cy in (1.5, 5.5) for cx in (1.5, 5.5))
    e, counts, _ = synthetic_si((8, 8), edge_counts=800 + 3000 * adf, seed=1)
    s = hs.signals.Signal1D(counts)
    for ax, name in zip(s.axes_manager.navigation_axes, ("x", "y")):
        ax.name, ax.units, ax.scale = name, "nm", 0.08
    sig = s.axes_manager.signal_axes[0]
    sig.name, sig.units, sig.offset, sig.scale = "Energy loss", "eV", e[0], 0.1
    s.save(d / "si.hspy")
    a = hs.signals.Signal2D(adf.astype(np.float32))
    a.save(d / "adf.hspy")
    torch.manual_seed(0)
    arch = default_arch("paper_mlp")
    ens = Ensemble([build_network(arch) for _ in range(2)])
    save_model(d / "model", ens, {"arch": arch, "input_grid": SPECTRUM_GRID,
                                  "output_grid": DOS_GRID,
                                  "preprocess": PreprocessConfig().to_dict()})
    return d


def test_predict_writes_signals_table_and_plot(files, capsys):
    out = files / "res" / "out.hspy"
    rc = main(["predict", str(files / "si.hspy"), "--adf", str(files / "adf.hspy"),
               "--model", str(files / "model"), "--device", "cpu", "--atoms",
               "--min-distance", "2", "--batch-size", "16", "--window", "unoccupied:0:5",
               "-o", str(out), "--plot", str(files / "res" / "out.png")])
    assert rc == 0
    err = capsys.readouterr().err
    assert "corefit predict: 64 pixels" in err and "4 atom columns" in err
    dos = hs.load(out)
    assert dos.data.shape == (4, 8, 8, 300)
    assert dos.axes_manager.signal_axes[0].units == "eV"
    assert [a.scale for a in dos.axes_manager.navigation_axes[:2]] == [0.08, 0.08]
    maps = hs.load(files / "res" / "out_maps.hspy")
    assert "unoccupied_0_5eV" in list(maps.metadata.Corefit.maps)
    table = pd.read_csv(files / "res" / "out_atoms.csv")
    assert list(table.columns[:5]) == ["atom", "y_px", "x_px", "y_nm", "x_nm"]
    assert len(table) == 4
    np.testing.assert_allclose(table["x_nm"], 0.08 * table["x_px"])
    assert (files / "res" / "out.png").stat().st_size > 10_000


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_gpu_is_one_clear_line(files, capsys):
    out = files / "nogpu.hspy"
    rc = main(["predict", str(files / "si.hspy"), "--model", str(files / "model"),
               "--device", "cuda", "-o", str(out)])
    assert rc == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


def test_bad_output_name_is_an_error(files, capsys):
    rc = main(["predict", str(files / "si.hspy"), "--model", str(files / "model"),
               "-o", str(files / "x.png")])
    assert rc == 2 and ".hspy" in capsys.readouterr().err


def test_lazy_run_equals_eager_and_leaves_no_temporary_files(files):
    outs = {}
    for name, extra in (("eager", []), ("lazy", ["--lazy"])):
        d = files / name
        rc = main(["predict", str(files / "si.hspy"), "--model", str(files / "model"),
                   "--device", "cpu", "--chunk-pixels", "16", "-q", "-o", str(d / "o.hspy")]
                  + extra)
        assert rc == 0
        outs[name] = hs.load(d / "o.hspy").data
        assert sorted(p.name for p in d.iterdir()) == ["o.hspy", "o_image.hspy", "o_maps.hspy"]
    np.testing.assert_allclose(outs["lazy"], outs["eager"], rtol=1e-5, equal_nan=True)
