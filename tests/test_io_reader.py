"""The napari reader contribution, called the way napari calls it (no viewer, no Qt)."""

import subprocess
import sys
from pathlib import Path

import hyperspy.api as hs
import numpy as np
import pytest

from napari_corefit.io.napari_reader import get_reader

DATA = Path(__file__).parent / "data"


def write_si(path, shape=(3, 4), n=150):
    data = np.random.default_rng(2).poisson(30.0, tuple(shape) + (n,)).astype("float32")
    signal = hs.signals.Signal1D(data)
    energy = signal.axes_manager.signal_axes[0]
    energy.units, energy.offset, energy.scale = "eV", 275.0, 0.2
    for axis in signal.axes_manager.navigation_axes:
        axis.units, axis.scale, axis.offset = "nm", 0.05, 0.5
    signal.save(path)
    return data


@pytest.mark.parametrize("name", ["a.tif", "a.npy", "a", "folder/x.png"])
def test_other_files_are_left_to_other_readers(name):
    assert get_reader(name) is None
    assert get_reader(["a.hspy", "b.hspy"]) is None


@pytest.mark.parametrize("ext", [".hspy", ".zspy", ".dm3", ".dm4", ".emd", ".msa", ".HSPY"])
def test_supported_extensions_get_a_reader(ext):
    assert callable(get_reader(f"scan{ext}"))
    assert callable(get_reader([f"scan{ext}"]))


def test_layers_for_spectrum_image(tmp_path):
    path = tmp_path / "scan.hspy"
    data = write_si(path)
    layers = get_reader(str(path))(str(path))
    assert [layer[2] for layer in layers] == ["image", "image"]
    (survey, survey_kw, _), (cube, cube_kw, _) = layers

    # survey: total counts per pixel, (y, x), with the scan calibration
    np.testing.assert_allclose(survey, data.sum(axis=-1), rtol=1e-6)
    assert survey_kw["name"] == "scan survey"
    assert survey_kw["scale"] == pytest.approx((0.05, 0.05))
    assert survey_kw["translate"] == pytest.approx((0.5, 0.5))
    assert survey_kw["metadata"]["kind"] == "survey"

    # SI: (energy, y, x) with the energy step and offset as scale and translate
    assert cube.shape == (150, 3, 4)
    np.testing.assert_array_equal(cube[:, 2, 1], data[2, 1])
    assert cube_kw["scale"] == pytest.approx((0.2, 0.05, 0.05))
    assert cube_kw["translate"] == pytest.approx((275.0, 0.5, 0.5))
    assert cube_kw["units"] == ("eV", "nm", "nm")
    meta = cube_kw["metadata"]
    assert meta["energy_axis"]["offset"] == pytest.approx(275.0)
    assert meta["energy_axis"]["size"] == 150
    assert meta["signal"].metadata.Signal.signal_type == "EELS"
    assert meta["signal"].data.shape == (3, 4, 150)
    assert meta["path"] == str(path)
    lo, hi = cube_kw["contrast_limits"]
    assert lo <= 30.0 <= hi


def test_velox_layers_use_the_df_image():
    path = str(DATA / "velox_eels_small.emd")
    (image, image_kw, _), (cube, cube_kw, _) = get_reader(path)(path)
    assert image_kw["metadata"]["kind"] == "adf"
    assert "DF-S" in image_kw["name"]
    assert image.shape == (16, 20)
    assert cube.shape == (512, 16, 20)
    assert cube_kw["scale"][0] == pytest.approx(0.1692)
    assert cube_kw["scale"][1] == pytest.approx(158.658, rel=1e-4)  # nm per pixel


def test_line_scan_becomes_a_one_row_image(tmp_path):
    path = tmp_path / "line.hspy"
    data = write_si(path, shape=(6,))
    (survey, _, _), (cube, cube_kw, _) = get_reader(str(path))(str(path))
    assert survey.shape == (1, 6)
    assert cube.shape == (150, 1, 6)
    np.testing.assert_array_equal(cube[:, 0, 4], data[4])
    assert cube_kw["scale"][2] == pytest.approx(0.05)


def test_big_files_stay_lazy_in_the_layer(tmp_path, monkeypatch):
    from napari_corefit.io import load

    path = tmp_path / "big.hspy"
    data = write_si(path)
    monkeypatch.setattr(load, "LAZY_ABOVE_BYTES", 1)
    (_, _, _), (cube, cube_kw, _) = get_reader(str(path))(str(path))
    assert hasattr(cube, "dask")
    assert cube_kw["metadata"]["signal"]._lazy
    np.testing.assert_array_equal(np.asarray(cube[:, 1, 2]), data[1, 2])


def test_io_and_reader_import_no_qt_and_no_napari():
    code = (
        "import sys, napari_corefit.io, napari_corefit.io.napari_reader; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_result_files_open_as_dos_cubes_and_maps(tmp_path):
    from napari_corefit.io import write_results

    rng = np.random.default_rng(4)
    dos = hs.signals.Signal1D(rng.random((4, 3, 5, 300)).astype("float32"))
    y, x = dos.axes_manager.navigation_axes[1], dos.axes_manager.navigation_axes[0]
    for axis in (x, y):
        axis.units, axis.scale = "nm", 0.1
    energy = dos.axes_manager.signal_axes[0]
    energy.name, energy.units = "Energy relative to E_F", "eV"
    energy.offset, energy.scale = -15.0, 0.1
    curves = ["occupied", "unoccupied", "occupied_std", "unoccupied_std"]
    dos.metadata.set_item("Corefit.kind", "dos")
    dos.metadata.set_item("Corefit.curves", curves)
    maps = hs.signals.Signal2D(rng.random((2, 3, 5)).astype("float32"))
    maps.metadata.set_item("Corefit.kind", "maps")
    maps.metadata.set_item("Corefit.maps", ["homo_lumo_gap", "edge_counts"])
    atoms = hs.signals.Signal1D(rng.random((4, 7, 300)))
    atoms.axes_manager.navigation_axes[0].name = "atom"
    atoms.metadata.set_item("Corefit.kind", "atoms")
    main, maps_file, atoms_file = write_results(
        tmp_path / "res.hspy", {"": dos, "maps": maps, "atoms": atoms}
    )

    layers = get_reader(str(main))(str(main))
    assert [kw["name"] for _, kw, _ in layers] == [f"res dos {c}" for c in curves]
    cube, kw, _ = layers[1]
    assert cube.shape == (300, 3, 5)
    np.testing.assert_allclose(np.asarray(cube[:, 2, 4]), dos.data[1, 2, 4])
    assert kw["scale"] == pytest.approx((0.1, 0.1, 0.1))
    assert kw["translate"][0] == pytest.approx(-15.0)
    assert kw["units"] == ("eV", "nm", "nm")

    map_layers = get_reader(str(maps_file))(str(maps_file))
    assert [kw["name"] for _, kw, _ in map_layers] == ["res_maps maps homo_lumo_gap",
                                                       "res_maps maps edge_counts"]
    np.testing.assert_allclose(map_layers[1][0], maps.data[1])
    # per-atom curves have no scan axes: nothing to show as an image
    assert get_reader(str(atoms_file))(str(atoms_file)) == []
