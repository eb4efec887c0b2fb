"""File > Open Sample, then the process widget with its defaults (only the model is chosen)."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import GUI_MARKS, process_widget, run_and_wait

pytestmark = GUI_MARKS + [pytest.mark.slow]


@pytest.mark.parametrize("key", ["corefit_sample", "corefit_sample_small"])
def test_sample_processes_with_default_settings(make_napari_viewer, qtbot, tiny_model, key):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-corefit", key)
    si = next(ly for ly in viewer.layers if ly.metadata.get("kind") == "spectrum_image")
    ny, nx = si.data.shape[1:]
    widget = process_widget(viewer, tiny_model)
    assert widget.si_layer.value is si
    assert widget.adf_layer.value is None  # the file's own ADF
    out = run_and_wait(widget, qtbot)
    assert out.error is None and not out.cancelled, out.error
    base = si.name.removesuffix(" SI")
    dos = viewer.layers[f"{base} unoccupied DOS (1/eV)"]
    assert dos.data.shape == (300, ny, nx)
    np.testing.assert_allclose(dos.scale[1:], si.scale[1:])
    np.testing.assert_allclose(dos.translate[1:], si.translate[1:])
    # the sample's single pixels are low-dose: some are masked, the columns' sums are not
    q = np.asarray(viewer.layers[f"{base} quality flags (0 = good)"].data).astype(int)
    assert ((q & 1) == 0).sum() > 0
    atoms = viewer.layers[f"{base} atom columns"]
    assert len(atoms.data) >= 5 and "lumo_ev" in atoms.features
    assert atoms.features["usable"].mean() > 0.5
