"""The atom inspector: real clicks on the canvas, arrow keys, what is plotted (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from widget_helpers import GUI_MARKS, NM, click_world, process_widget, run_and_wait, write_si

pytestmark = GUI_MARKS


@pytest.fixture
def processed(make_napari_viewer, qtbot, tiny_model, tmp_path):
    from napari_corefit.widgets import AtomInspector

    path, counts = write_si(tmp_path / "scan.hspy")
    viewer = make_napari_viewer()
    widget = process_widget(viewer, tiny_model, path)
    inspector = AtomInspector(viewer)
    viewer.window.add_dock_widget(inspector, name="Atom inspector", area="right")
    out = run_and_wait(widget, qtbot)
    assert out.result is not None, out.error
    viewer.reset_view()
    qtbot.wait(100)
    return viewer, inspector, out.result, counts


def _world(px_yx):
    return (-2.0 + NM * px_yx[0], 1.0 + NM * px_yx[1])


def _band(ax):
    """y-range of the +-sigma bands (fill_between collections) of an axes."""
    ys = np.concatenate([c.get_paths()[0].vertices[:, 1] for c in ax.collections])
    return ys.min(), ys.max()


def test_click_on_an_atom_plots_its_spectrum_and_dos(processed, qtbot):
    viewer, inspector, res, _ = processed
    table = res.atoms_table
    i = 5
    click_world(viewer, qtbot, _world((table["y_px"][i] + 0.2, table["x_px"][i] - 0.2)))
    assert inspector.selection == ("atom", i)
    p = inspector.plotted
    np.testing.assert_array_equal(p["occupied"], res.atoms_mean[i, 0])
    np.testing.assert_array_equal(p["unoccupied_std"], res.atoms_std[i, 1])
    np.testing.assert_array_equal(p["input"], res.atoms_input[i])
    # what the axes hold, not only what the widget remembers
    lines = inspector.ax_dos.get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), res.atoms_mean[i, 0])
    np.testing.assert_allclose(lines[1].get_ydata(), res.atoms_mean[i, 1])
    np.testing.assert_allclose(lines[0].get_xdata(), np.arange(300) * 0.1 - 15.0, atol=1e-9)
    lo, hi = _band(inspector.ax_dos)
    m, s = res.atoms_mean[i], res.atoms_std[i]
    assert lo == pytest.approx(float((m - s).min()), rel=1e-5)
    assert hi == pytest.approx(float((m + s).max()), rel=1e-5)
    np.testing.assert_allclose(inspector.ax_input.get_lines()[0].get_ydata(), res.atoms_input[i])
    # the table row and the selection in the points layer
    rows = {inspector.table.item(r, 0).text(): inspector.table.item(r, 1).text()
            for r in range(inspector.table.rowCount())}
    assert rows["atom"] == str(i)
    assert float(rows["x_px"]) == pytest.approx(table["x_px"][i], rel=1e-3)
    assert viewer.layers["scan atom columns"].selected_data == {i}
    assert inspector.atom_list.currentRow() == i


def test_click_between_atoms_shows_the_pixel(processed, qtbot):
    from napari_corefit.spectra.pipeline import PreprocessConfig, preprocess

    viewer, inspector, res, counts = processed
    click_world(viewer, qtbot, _world((3.0, 11.0)))
    assert inspector.selection == ("pixel", 3, 11)
    p = inspector.plotted
    np.testing.assert_array_equal(p["occupied"], res.occupied.data[3, 11])
    np.testing.assert_array_equal(p["unoccupied"], res.unoccupied.data[3, 11])
    e = 230.0 + 0.1 * np.arange(counts.shape[-1])
    ref = preprocess(e, counts[3, 11].astype(np.float64), PreprocessConfig())
    assert bool(ref.mask)
    np.testing.assert_allclose(p["input"], ref.spectra, rtol=1e-4, atol=1e-6)
    rows = {inspector.table.item(r, 0).text(): inspector.table.item(r, 1).text()
            for r in range(inspector.table.rowCount())}
    assert float(rows["lumo_ev"]) == pytest.approx(float(res.maps["lumo_ev"].data[3, 11]),
                                                   rel=1e-3, nan_ok=True)


def test_click_outside_and_drag_change_nothing(processed, qtbot):
    viewer, inspector, res, _ = processed
    click_world(viewer, qtbot, _world((1.5, 1.5)))
    before = inspector.selection
    shown = inspector.plotted["occupied"].copy()
    viewer.camera.zoom *= 0.4  # room around the scan
    qtbot.wait(50)
    click_world(viewer, qtbot, _world((-6.0, -6.0)))
    assert inspector.selection == before
    np.testing.assert_array_equal(inspector.plotted["occupied"], shown)
    assert "outside the scan" in inspector.status.text()
    click_world(viewer, qtbot, _world((9.0, 3.0)), drag=30)  # a pan, not a pick
    assert inspector.selection == before


def test_arrow_keys_and_list_step_through_atoms(processed, qtbot):
    viewer, inspector, res, _ = processed
    inspector.atom_list.setFocus()
    inspector.atom_list.setCurrentRow(2)
    assert inspector.selection == ("atom", 2)
    qtbot.keyClick(inspector.atom_list, Qt.Key_Down)
    assert inspector.selection == ("atom", 3)
    np.testing.assert_array_equal(inspector.plotted["occupied"], res.atoms_mean[3, 0])
    qtbot.keyClick(inspector.atom_list, Qt.Key_Up)
    qtbot.keyClick(inspector.atom_list, Qt.Key_Up)
    assert inspector.selection == ("atom", 1)
    assert viewer.layers["scan atom columns"].selected_data == {1}
    assert inspector.atom_list.count() == len(res.atoms_table) == 16


def test_widgets_open_through_the_plugin_manifest(make_napari_viewer):
    from napari_corefit.widgets import AtomInspector, ExportWidget, ProcessWidget

    viewer = make_napari_viewer()
    for name, cls in [("Process spectrum image", ProcessWidget),
                      ("Atom inspector", AtomInspector), ("Export results", ExportWidget)]:
        _, widget = viewer.window.add_plugin_dock_widget("napari-corefit", name)
        assert isinstance(widget, cls)
    # and they sit in napari's menus too (Layers > Measure, File > IO utilities)
    from napari._app_model import get_app_model

    menus = get_app_model().menus
    ids = {m: [getattr(i, "command", None) and i.command.id for i in menus.get_menu(m)]
           for m in ("napari/layers/measure", "napari/file/io_utilities")}
    assert {"napari-corefit.process_widget", "napari-corefit.inspector_widget"} <= set(
        ids["napari/layers/measure"])
    assert "napari-corefit.export_widget" in ids["napari/file/io_utilities"]
    # with no result yet, a click on the canvas is harmless
    # napari >= 0.6's public mapping holds the inner widgets; older ones only the dock wrappers
    docked = getattr(viewer.window, "dock_widgets", None) or viewer.window._dock_widgets
    inner = [w.widget() if hasattr(w, "widget") else w for w in docked.values()]
    inspector = next(w for w in inner if isinstance(w, AtomInspector))
    assert inspector.show_world((0.0, 0.0)) is None
    assert "no corefit result" in inspector.status.text()
