"""Helpers of the widget tests (imported by name: tests/widgets has no __init__.py)."""

from __future__ import annotations

import os
import sys

import hyperspy.api as hs
import numpy as np
import pytest

#: every test here needs a display with OpenGL (Xvfb + Mesa), as the napari smoke test
GUI_MARKS = [
    pytest.mark.gui,
    pytest.mark.skipif(
        sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
        reason="needs an X display: run under xvfb-run (bash scripts/test.sh does)",
    ),
]

SHAPE = (16, 16)
SEP = 4.0  # column spacing, pixels: a 4 x 4 lattice
NM = 0.05  # pixel size


def lattice(shape=SHAPE, sep=SEP):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for cy in np.arange(1.5, shape[0], sep):
        for cx in np.arange(1.5, shape[1], sep):
            img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.0)
    return img


def write_si(path, shape=SHAPE, edge=True, seed=0):
    """A calibrated C K-edge SI whose edge strength follows a lattice of columns."""
    from napari_corefit.spectra.synthetic import synthetic_si

    img = lattice(shape)
    counts_n = (600 + 3000 * img) if edge else 0.0
    e, counts, _ = synthetic_si(shape, edge_counts=counts_n, peak_jitter=0.2, seed=seed)
    s = hs.signals.Signal1D(counts)
    for ax, name, off in zip(s.axes_manager.navigation_axes, ("x", "y"), (1.0, -2.0)):
        ax.name, ax.units, ax.offset, ax.scale = name, "nm", off, NM
    sig = s.axes_manager.signal_axes[0]
    sig.name, sig.units, sig.offset, sig.scale = "Energy loss", "eV", e[0], e[1] - e[0]
    s.set_signal_type("EELS")
    s.save(path, overwrite=True)
    return path, counts



# ---- helpers shared by the widget tests


def messages():
    """Texts of the napari notifications so far, oldest first."""
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


def process_widget(viewer, model_dir, path=None):
    """Open ``path`` with the plugin's reader, dock a ProcessWidget using ``model_dir``."""
    from napari_corefit.widgets import ProcessWidget

    if path is not None:
        viewer.open(str(path), plugin="napari-corefit")
    widget = ProcessWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Process spectrum image")
    widget.model_source.value = "model folder"
    widget.model_dir.value = model_dir
    return widget


def run_and_wait(widget, qtbot, timeout=240_000):
    worker = widget.run()
    assert worker is not None, widget.status.text()
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)
    return widget.last_outcome


def click_world(viewer, qtbot, yx, drag=None):
    """A real left click (Qt events) on the canvas at world position (y, x)."""
    from qtpy.QtCore import QPoint, Qt

    canvas = viewer.window._qt_viewer.canvas
    p = canvas.view.scene.transform.map([yx[1], yx[0], 0, 1])
    pos = QPoint(int(round(p[0] / p[3])), int(round(p[1] / p[3])))
    native = canvas._scene_canvas.native
    if drag is None:
        qtbot.mouseClick(native, Qt.LeftButton, Qt.NoModifier, pos)
    else:
        qtbot.mousePress(native, Qt.LeftButton, Qt.NoModifier, pos)
        end = QPoint(pos.x() + drag, pos.y() + drag)
        from qtpy.QtCore import QEvent
        from qtpy.QtGui import QMouseEvent
        from qtpy.QtWidgets import QApplication

        ev = QMouseEvent(QEvent.MouseMove, end, Qt.NoButton, Qt.LeftButton, Qt.NoModifier)
        QApplication.sendEvent(native, ev)
        qtbot.mouseRelease(native, Qt.LeftButton, Qt.NoModifier, end)
    qtbot.wait(50)
    return pos
