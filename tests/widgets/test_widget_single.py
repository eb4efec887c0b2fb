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
