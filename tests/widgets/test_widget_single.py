"""The process widget and the reader on a single spectrum and on files without a C K edge."""

from __future__ import annotations

import hyperspy.api as hs
import numpy as np
from widget_helpers import GUI_MARKS, messages, process_widget, run_and_wait

pytestmark = GUI_MARKS


def _spectrum(path, counts, e0, step=0.1):
    s = hs.signals.Signal1D(np.asarray(counts, np.float32))
    ax = s.axes_manager.signal_axes[0]
    ax.name, ax.units, ax.offset, ax.scale = "Energy loss", "eV", e0, step
    s.save(path, overwrite=True)
    return path


def test_single_spectrum_runs_and_shows_in_the_inspector(make_napari_viewer, qtbot, tiny_model,
                                                         tmp_path):
    from napari_corefit.spectra.synthetic import synthetic_si
    from napari_corefit.widgets import AtomInspector

    e, counts, _ = synthetic_si((1,), edge_counts=4000, seed=7)
    path = _spectrum(tmp_path / "film.msa", counts[0], e[0])
    viewer = make_napari_viewer()
    widget = process_widget(viewer, tiny_model, path)
    assert viewer.layers["film SI"].data.shape == (e.size, 1, 1)
    out = run_and_wait(widget, qtbot)
    assert out.error is None, out.error
    assert out.result.atoms_table is None
    assert np.asarray(out.result.maps["reason"].data).ravel()[0] == 0
    assert viewer.layers["film unoccupied DOS (1/eV)"].data.shape == (300, 1, 1)
    assert viewer.layers["film LUMO peak (eV rel. E_F)"].data.shape == (1, 1)
    # the inspector was opened and shows the spectrum and its DOS without a click
    inspectors = viewer.window._qt_window.findChildren(AtomInspector)
    assert len(inspectors) == 1
    insp = inspectors[0]
    assert insp.selection == ("pixel", 0, 0)
    np.testing.assert_array_equal(insp.plotted["unoccupied"], out.result.unoccupied.data)
    assert insp.plotted["input"] is not None and insp.plotted["input"].shape == (160,)
    assert np.isclose(insp.plotted["input"].sum() * 0.1, 1.0, atol=1e-3)
    lines = insp.ax_dos.get_lines()
    np.testing.assert_allclose(lines[1].get_ydata(), out.result.unoccupied.data)
    assert "done: 1 pixels, 1 usable" in widget.status.text()
    # saved from the export widget: files hs.load and the reader open
    from napari_corefit.io.napari_reader import get_reader
    from napari_corefit.widgets.export import ExportWidget

    written = ExportWidget(viewer).export_hspy(tmp_path / "res" / "film_result.hspy")
    assert [p.name for p in written] == ["film_result.hspy", "film_result_maps.hspy"]
    for p in written:
        sig = hs.load(p)
        assert all(str(a.name) not in ("", "<undefined>") for a in sig.axes_manager._axes)
        assert get_reader(str(p))(str(p))
    np.testing.assert_allclose(hs.load(written[0]).data[1], out.result.unoccupied.data)


def test_file_without_carbon_opens_and_the_widget_refuses_it(make_napari_viewer, qtbot,
                                                             tiny_model, tmp_path):
    import pytest

    from napari_corefit.io import CorefitIOWarning

    e = np.arange(300.0, 2347.0, 1.0)
    rng = np.random.default_rng(0)
    counts = rng.poisson(1e12 * e ** -3.0, size=(4, 5, e.size)).astype(np.float32)
    s = hs.signals.Signal1D(counts)
    ax = s.axes_manager.signal_axes[0]
    ax.name, ax.units, ax.offset, ax.scale = "Energy loss", "eV", 300.0, 1.0
    path = tmp_path / "crl.hspy"
    s.save(path)
    viewer = make_napari_viewer()
    with pytest.warns(CorefitIOWarning, match="does not contain the carbon K edge"):
        widget = process_widget(viewer, tiny_model, path)
    assert viewer.layers["crl SI"].data.shape == (e.size, 4, 5)
    assert widget.run() is None
    assert "does not contain the carbon K edge at 284 eV" in messages()[-1]
    assert not any("DOS" in ly.name for ly in viewer.layers)


def test_line_scan_result_saved_from_the_widget_reopens(make_napari_viewer, qtbot, tiny_model,
                                                        tmp_path):
    from napari_corefit.io.napari_reader import get_reader
    from napari_corefit.spectra.synthetic import synthetic_si
    from napari_corefit.widgets.export import ExportWidget

    e, counts, _ = synthetic_si((17,), edge_counts=4000, seed=8)
    s = hs.signals.Signal1D(counts)
    x = s.axes_manager.navigation_axes[0]
    x.name, x.units, x.scale = "x", "nm", 0.5
    ax = s.axes_manager.signal_axes[0]
    ax.name, ax.units, ax.offset, ax.scale = "Energy loss", "eV", e[0], 0.1
    s.save(tmp_path / "line.hspy")
    viewer = make_napari_viewer()
    widget = process_widget(viewer, tiny_model, tmp_path / "line.hspy")
    out = run_and_wait(widget, qtbot)
    assert out.error is None, out.error
    dos_file, maps_file = ExportWidget(viewer).export_hspy(tmp_path / "res.hspy")
    dos = hs.load(dos_file)
    assert dos.data.shape == (4, 17, 300) and dos.axes_manager["x"].scale == 0.5
    maps = hs.load(maps_file)
    assert maps.data.shape == (len(maps.metadata.Corefit.maps), 17)
    layers = get_reader(str(maps_file))(str(maps_file))
    assert layers[0][0].shape == (1, 17) and layers[0][1]["scale"][1] == 0.5
