"""Export widget (CSV, .hspy) and the npe2 writer: files HyperSpy reads back with their axes."""

from __future__ import annotations

import hyperspy.api as hs
import numpy as np
import pandas as pd
import pytest
from widget_helpers import GUI_MARKS, NM, SHAPE, messages, process_widget, run_and_wait

pytestmark = GUI_MARKS


@pytest.fixture
def processed(make_napari_viewer, qtbot, tiny_model, si_path):
    viewer = make_napari_viewer()
    widget = process_widget(viewer, tiny_model, si_path)
    out = run_and_wait(widget, qtbot)
    assert out.result is not None, out.error
    return viewer, out.result


def test_export_widget_writes_table_and_results(processed, tmp_path):
    from napari_corefit.engine import EngineResult
    from napari_corefit.widgets import ExportWidget

    viewer, res = processed
    export = ExportWidget(viewer)
    csv = export.export_csv(tmp_path / "atoms")
    assert csv.name == "atoms.csv"
    back = pd.read_csv(csv)
    assert list(back.columns) == list(res.atoms_table.columns)
    np.testing.assert_allclose(back["lumo_ev"], res.atoms_table["lumo_ev"], equal_nan=True)
    np.testing.assert_allclose(back["y_nm"], res.atoms_table["y_nm"])
    paths = export.export_hspy(tmp_path / "res.hspy")
    assert {p.name for p in paths} >= {"res.hspy", "res_maps.hspy", "res_atoms.csv"}
    loaded = EngineResult.load(tmp_path / "res.hspy")
    np.testing.assert_array_equal(loaded.unoccupied.data, res.unoccupied.data)
    assert loaded.occupied.axes_manager.signal_axes[0].units == "eV"


def test_export_without_result_says_so(make_napari_viewer):
    from napari_corefit.widgets import ExportWidget

    export = ExportWidget(make_napari_viewer())
    assert export._ask_csv() is None
    assert "no corefit result in the viewer" in messages()[-1]
    with pytest.raises(ValueError, match="no corefit result"):
        export.export_hspy("x.hspy")


def test_writer_saves_layers_hyperspy_opens_with_axes(processed, tmp_path):
    viewer, res = processed
    name = "scan occupied DOS (1/eV)"
    viewer.layers.selection = {viewer.layers[name]}
    out = viewer.layers.save(str(tmp_path / "occ.hspy"), selected=True, plugin="napari-corefit")
    assert [p.rsplit("/", 1)[-1] for p in out] == ["occ.hspy"]
    s = hs.load(tmp_path / "occ.hspy")
    assert s.data.shape == SHAPE + (300,)
    np.testing.assert_array_equal(s.data, res.occupied.data)
    e = s.axes_manager.signal_axes[0]
    assert (e.name, e.units, e.offset, e.scale) == ("Energy relative to E_F", "eV", -15.0,
                                                    pytest.approx(0.1))
    ny, nx = s.axes_manager.navigation_axes[::-1]
    assert (ny.units, ny.offset, ny.scale) == ("nm", -2.0, pytest.approx(NM))
    assert (nx.units, nx.offset, nx.scale) == ("nm", 1.0, pytest.approx(NM))
    # two layers: one file each, beside the name given; napari-corefit's reader opens them
    maps = ["scan LUMO peak (eV rel. E_F)", "scan quality flags (0 = good)"]
    viewer.layers.selection = {viewer.layers[n] for n in maps}
    out = viewer.layers.save(str(tmp_path / "maps.hspy"), selected=True,
                             plugin="napari-corefit")
    assert len(out) == 2
    lumo = next(p for p in out if "LUMO" in p)
    m = hs.load(lumo)
    np.testing.assert_array_equal(m.data, res.maps["lumo_ev"].data)
    assert [a.units for a in m.axes_manager.signal_axes] == ["nm", "nm"]
    layers = viewer.open(str(tmp_path / "occ.hspy"), plugin="napari-corefit")
    assert layers[0].data.shape == (300,) + SHAPE
    assert tuple(layers[0].scale) == pytest.approx((0.1, NM, NM))


def test_writer_keeps_a_spectrum_image_a_spectrum_image(make_napari_viewer, si_path, tmp_path):
    viewer = make_napari_viewer()
    survey, cube = viewer.open(str(si_path), plugin="napari-corefit")
    out = viewer.layers.save(str(tmp_path / "copy.hspy"), selected=False, plugin="napari-corefit")
    assert len(out) == 2
    si_file = next(p for p in out if p.endswith("_scan_SI.hspy"))
    s = hs.load(si_file)
    assert s.metadata.Signal.signal_type == "EELS" and not s.metadata.has_item("Corefit")
    np.testing.assert_array_equal(s.data, np.moveaxis(np.asarray(cube.data), 0, -1))
    e = s.axes_manager.signal_axes[0]
    assert (e.units, e.offset, e.scale) == ("eV", pytest.approx(230.0), pytest.approx(0.1))
    again = viewer.open(si_file, plugin="napari-corefit")
    assert again[-1].metadata["kind"] == "spectrum_image"
    assert again[-1].data.shape == cube.data.shape
