"""The process widget: settings -> engine in a worker -> result layers (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from widget_helpers import GUI_MARKS, NM, SHAPE, messages, process_widget, run_and_wait, write_si
from qtpy.QtCore import Qt

pytestmark = GUI_MARKS


def _process(viewer, qtbot, model_dir, path):
    return process_widget(viewer, model_dir, path)


def _run(widget, qtbot):
    return run_and_wait(widget, qtbot)


def test_defaults_give_the_result_layers(make_napari_viewer, qtbot, tiny_model, si_path):
    viewer = make_napari_viewer()
    widget = _process(viewer, qtbot, tiny_model, si_path)
    # defaults: the reader's SI layer is picked, no setting touched except the model folder
    assert widget.si_layer.value.name == "scan SI"
    widget.chunk_pixels = 32  # 8 blocks: several progress reports
    shown = []  # what the GUI thread saw while the worker ran: the viewer stayed responsive
    widget.progressed.connect(lambda f, m: shown.append((f, widget.running)))
    outcome = _run(widget, qtbot)
    fractions = [f for f, running in shown if running and f >= 0]
    assert len(fractions) > 3 and fractions == sorted(fractions) and fractions[-1] <= 1.0
    assert outcome.error is None and not outcome.cancelled, outcome.error
    res = outcome.result
    names = [ly.name for ly in viewer.layers]
    dos = viewer.layers["scan occupied DOS (1/eV)"]
    assert dos.data.shape == (300,) + SHAPE
    assert tuple(dos.scale) == pytest.approx((0.1, NM, NM))
    assert tuple(dos.translate) == pytest.approx((-15.0, -2.0, 1.0))
    assert [str(u) for u in dos.units] == ["electron_volt", "nanometer", "nanometer"]
    assert dos.axis_labels[0].startswith("Energy relative to E_F")
    np.testing.assert_array_equal(np.asarray(dos.data), np.moveaxis(res.occupied.data, -1, 0))
    un = viewer.layers["scan unoccupied DOS (1/eV)"]
    np.testing.assert_array_equal(np.asarray(un.data)[:, 3, 5], res.unoccupied.data[3, 5])
    for sigma in ("scan occupied DOS sigma (1/eV)", "scan unoccupied DOS sigma (1/eV)"):
        assert viewer.layers[sigma].data.shape == (300,) + SHAPE
    lumo = viewer.layers["scan LUMO peak (eV rel. E_F)"]
    assert lumo.data.shape == SHAPE and lumo.colormap.name == "viridis"
    np.testing.assert_array_equal(lumo.data, res.maps["lumo_ev"].data)
    lo, hi = lumo.contrast_limits
    finite = res.maps["lumo_ev"].data[np.isfinite(res.maps["lumo_ev"].data)]
    assert finite.min() - 1e-6 <= lo < hi <= finite.max() + 1e-6
    assert viewer.layers["scan quality flags (0 = good)"].contrast_limits == [0, 7]
    for label in ("HOMO peak (eV rel. E_F)", "HOMO-LUMO gap (eV)", "edge counts (counts)",
                  "unoccupied DOS fraction in 0..3 eV (area fraction)",
                  "occupied DOS fraction in -3..0 eV (area fraction)"):
        assert f"scan {label}" in names
    atoms = viewer.layers["scan atom columns"]
    assert len(atoms.data) == 16  # the 4 x 4 lattice
    assert tuple(atoms.scale) == pytest.approx((NM, NM))
    np.testing.assert_allclose(np.sort(atoms.data[:, 0]), np.repeat([1.5, 5.5, 9.5, 13.5], 4),
                               atol=0.3)
    feats = atoms.features
    assert {"lumo_ev", "homo_ev", "edge_counts", "y_nm", "usable"} <= set(feats.columns)
    np.testing.assert_allclose(feats["x_nm"], res.atoms_table["x_nm"])
    # coloured by a feature: the face colours differ where the feature does
    colors = np.asarray(atoms.face_color)
    assert len({tuple(np.round(c, 4)) for c in colors}) > 1
    # the viewer already showed the scan's survey image: no second copy
    assert sum(ly.name.startswith("scan survey") for ly in viewer.layers) == 1
    assert widget.progress_bar.value() == 1000
    assert any("256 pixels" in m and "16 atom columns" in m for m in messages())


def test_second_run_replaces_layers_in_place(make_napari_viewer, qtbot, tiny_model, si_path):
    viewer = make_napari_viewer()
    widget = _process(viewer, qtbot, tiny_model, si_path)
    widget.smoothing.value = 0.0
    _run(widget, qtbot)
    first = {ly.name: ly for ly in viewer.layers}
    order = [ly.name for ly in viewer.layers]
    old_occ = np.asarray(first["scan occupied DOS (1/eV)"].data).copy()
    widget.smoothing.value = 1.0  # other settings, other numbers
    out = _run(widget, qtbot)
    assert out.error is None
    assert [ly.name for ly in viewer.layers] == order  # same names, same places, no copies
    new_occ = viewer.layers["scan occupied DOS (1/eV)"]
    assert new_occ is not first["scan occupied DOS (1/eV)"]
    assert not np.allclose(np.nan_to_num(np.asarray(new_occ.data)), np.nan_to_num(old_occ))
    assert viewer.layers["scan SI"] is first["scan SI"]  # inputs untouched
    # a run without atom finding removes the previous run's columns layer
    widget.find_atoms.value = False
    _run(widget, qtbot)
    assert "scan atom columns" not in viewer.layers
    assert [n for n in order if n != "scan atom columns"] == [ly.name for ly in viewer.layers]


def test_cancel_mid_run_leaves_no_layers(make_napari_viewer, qtbot, tiny_model, si_path):
    viewer = make_napari_viewer()
    widget = _process(viewer, qtbot, tiny_model, si_path)
    widget.chunk_pixels = 16  # 16 blocks: the engine checks for Cancel between them
    before = [ly.name for ly in viewer.layers]
    seen = []

    def cancel_at_first_report(fraction, message):  # runs in the worker thread
        seen.append(fraction)
        if 0 <= fraction < 1:
            widget.request_cancel()

    widget.progressed.connect(cancel_at_first_report, Qt.DirectConnection)
    out = _run(widget, qtbot)
    widget.progressed.disconnect(cancel_at_first_report)
    assert out.cancelled and out.result is None
    assert [f for f in seen if f >= 0] and max(seen) < 1.0  # it stopped part-way
    assert [ly.name for ly in viewer.layers] == before
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert "cancelled" in widget.status.text()
    assert any("cancelled; no layers were added" in m for m in messages())
    # the Cancel button: enabled while running, and a run started afterwards is not cancelled
    out = _run(widget, qtbot)
    assert out.result is not None and "scan atom columns" in viewer.layers


def test_cancel_button_stops_a_run(make_napari_viewer, qtbot, tiny_model, si_path):
    viewer = make_napari_viewer()
    widget = _process(viewer, qtbot, tiny_model, si_path)
    widget.chunk_pixels = 1
    before = [ly.name for ly in viewer.layers]
    widget.run()
    assert widget.cancel_button.isEnabled() and not widget.run_button.isEnabled()
    qtbot.mouseClick(widget.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert widget.last_outcome.cancelled
    assert [ly.name for ly in viewer.layers] == before


def test_failures_are_notified_with_their_cause(make_napari_viewer, qtbot, tiny_model, tmp_path):
    from napari_corefit.widgets import ProcessWidget

    viewer = make_napari_viewer()
    widget = ProcessWidget(viewer)
    # nothing open
    assert widget.run() is None
    assert "no spectrum image" in messages()[-1]
    # a plain image is not a spectrum image
    viewer.add_image(np.zeros((5, 16, 16)), name="stack")
    widget.si_layer.value = viewer.layers["stack"]
    assert widget.run() is None
    assert "'stack' is not a spectrum image" in messages()[-1]
    path, _ = write_si(tmp_path / "scan.hspy")
    viewer.open(str(path), plugin="napari-corefit")
    widget.si_layer.value = viewer.layers["scan SI"]
    # no model folder chosen (a fresh widget's folder field is empty)
    widget.model_source.value = "model folder"
    assert widget.run() is None and "no model folder chosen" in messages()[-1]
    # a folder that is not a model
    widget.model_dir.value = tmp_path
    out = _run(widget, qtbot)
    assert out.error is not None and "missing config.json" in messages()[-1]
    # model mismatch: absolute alignment gives inputs the model was not trained for
    widget.model_dir.value = tiny_model
    widget.alignment.value = "absolute"
    out = _run(widget, qtbot)
    assert "model mismatch" in messages()[-1]
    widget.alignment.value = None
    # a background window outside the data
    widget.auto_window.value = False
    widget.window_lo.value, widget.window_hi.value = 100.0, 150.0
    assert widget.run() is None and "outside the data" in messages()[-1]
    widget.auto_window.value = True
    # an ADF image of another scan
    viewer.add_image(np.zeros((8, 8)), name="other adf")
    widget.adf_layer.value = viewer.layers["other adf"]
    assert widget.run() is None and "has shape (8, 8)" in messages()[-1]
    assert not any(ly.name.startswith("scan occupied") for ly in viewer.layers)


def test_no_carbon_anywhere_is_reported(make_napari_viewer, qtbot, tiny_model, tmp_path):
    viewer = make_napari_viewer()
    path, _ = write_si(tmp_path / "blank.hspy", edge=False)
    widget = _process(viewer, qtbot, tiny_model, path)
    widget.find_atoms.value = False
    out = _run(widget, qtbot)
    assert out.error is None
    assert "no usable pixel" in messages()[-1] and "no carbon" in messages()[-1]


def test_device_choices_show_what_torch_sees(make_napari_viewer):
    import torch

    from napari_corefit.widgets import ProcessWidget

    widget = ProcessWidget(make_napari_viewer())
    values = list(widget.device.choices)
    assert values[:2] == ["auto", "cpu"]
    n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert values[2:] == [f"cuda:{i}" for i in range(n_gpu)]
    text = widget.device.native.itemText(0)
    assert text.startswith("auto (CUDA: " if n_gpu else "auto (CPU: torch sees no CUDA GPU")
    assert widget.device.value == "auto"


def test_line_scan_gives_one_row_layers(make_napari_viewer, qtbot, tiny_model, tmp_path):
    import hyperspy.api as hs

    from napari_corefit.widgets import AtomInspector

    path, counts = write_si(tmp_path / "full.hspy")
    line = hs.load(path).inav[:, 5]  # row 5: a 16-pixel line scan
    line.save(tmp_path / "line.hspy")
    viewer = make_napari_viewer()
    widget = _process(viewer, qtbot, tiny_model, tmp_path / "line.hspy")
    inspector = AtomInspector(viewer)
    out = _run(widget, qtbot)
    assert out.error is None, out.error
    assert out.result.atoms_table is None  # no columns in a line scan
    dos = viewer.layers["line occupied DOS (1/eV)"]
    assert dos.data.shape == (300, 1, 16)
    np.testing.assert_array_equal(np.asarray(dos.data)[:, 0, 7], out.result.occupied.data[7])
    assert viewer.layers["line LUMO peak (eV rel. E_F)"].data.shape == (1, 16)
    assert "line atom columns" not in viewer.layers
    assert inspector.show_world((0.0, 1.0 + NM * 7)) == ("pixel", 0, 7)  # y: a unit axis
    np.testing.assert_array_equal(inspector.plotted["occupied"], out.result.occupied.data[7])


def test_model_choice_follows_the_installation(make_napari_viewer):
    from napari_corefit.widgets import ProcessWidget
    from napari_corefit.widgets.process import bundled_model_present

    n = len(messages())
    widget = ProcessWidget(make_napari_viewer())
    if bundled_model_present():
        assert widget.model_source.value == "bundled default model"
        assert widget.model_dir.native.isHidden()
    else:  # said once, and the folder picker is offered
        assert widget.model_source.value == "model folder"
        assert any("no bundled model" in m for m in messages()[n:])
        assert not widget.model_dir.native.isHidden()


def test_lazy_si_gives_memory_mapped_cubes(make_napari_viewer, qtbot, tiny_model, si_path):
    viewer = make_napari_viewer()
    widget = _process(viewer, qtbot, tiny_model, si_path)
    ref = _run(widget, qtbot).result.occupied.data.copy()
    si = viewer.layers["scan SI"]
    si.metadata["signal"] = si.metadata["signal"].as_lazy()  # as big files open
    si.metadata.pop("spectrum_image")
    widget.chunk_pixels = 64
    out = _run(widget, qtbot)
    run = viewer.layers["scan occupied DOS (1/eV)"].metadata["corefit_run"]
    assert isinstance(out.result.dos, np.memmap) and run.store is out.store
    np.testing.assert_allclose(out.result.occupied.data, ref, rtol=1e-5, atol=1e-7,
                               equal_nan=True)
    # without the file's SpectrumImage the widget cannot tell that the viewer shows the survey
    # image already: the image the columns were found in comes as a layer of its own
    img = viewer.layers["scan survey (total counts)"]
    np.testing.assert_allclose(img.data, np.asarray(si.metadata["signal"].data).sum(-1),
                               rtol=1e-5)
    assert tuple(img.scale) == pytest.approx((NM, NM))
