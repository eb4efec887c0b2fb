"""The atom inspector: click an atom column or a pixel, see its spectrum and predicted DOS.

A napari-matplotlib widget (:class:`napari_matplotlib.base.BaseNapariMPLWidget`, themed like
napari) with two plots: the preprocessed measured spectrum (the model's input) and the predicted
occupied and unoccupied DOS with the ensemble's +-sigma band. Below them, the atom's table row
and a list of the atom columns (arrow keys step through it). Clicks outside the scan only say
so in the status line.
"""

from __future__ import annotations

import numpy as np
from napari_matplotlib.base import BaseNapariMPLWidget
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QListWidget, QSplitter, QTableWidget, QTableWidgetItem

from napari_corefit.widgets._layers import find_runs

__all__ = ["AtomInspector"]

#: a click within this fraction of the marker size of a column selects the column
_PICK_FRACTION = 0.75


class AtomInspector(BaseNapariMPLWidget):
    """Dock widget showing one atom column or pixel of the newest (or selected) corefit run.

    Attributes
    ----------
    selection : tuple or None
        ``("atom", i)`` or ``("pixel", iy, ix)`` of what is shown.
    plotted : dict
        The arrays drawn last: ``input_energy``, ``input``, ``dos_energy``, ``occupied``,
        ``unoccupied``, ``occupied_std``, ``unoccupied_std`` (for tests and scripts).
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent=parent)
        self.run = None
        self.selection = None
        self.plotted = {}
        self.status = QLabel("click an atom column or a pixel of a corefit result")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["column", "value"])
        self.table.verticalHeader().setVisible(False)
        self.atom_list = QListWidget()
        self.atom_list.currentRowChanged.connect(self._on_list_row)
        lower = QSplitter(Qt.Horizontal)
        lower.addWidget(self.atom_list)
        lower.addWidget(self.table)
        lower.setStretchFactor(1, 3)
        self.layout().addWidget(self.status)
        self.layout().addWidget(lower)
        self.layout().setStretchFactor(self.canvas, 3)
        self.layout().setStretchFactor(lower, 2)
        with _style(self):
            self.ax_input, self.ax_dos = self.figure.subplots(1, 2)
        self.canvas.setMinimumHeight(220)
        self._clear_axes()
        self.viewer.mouse_drag_callbacks.append(self._on_click)
        # a deleted widget must not stay in the viewer's click callbacks
        callbacks, click = self.viewer.mouse_drag_callbacks, self._on_click
        self.destroyed.connect(lambda *_: click in callbacks and callbacks.remove(click))
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.viewer.layers.selection.events.active.connect(self._on_layers_changed)
        self._on_layers_changed()

    # ---- which run
    def _current_run(self):
        active = self.viewer.layers.selection.active
        run = active.metadata.get("corefit_run") if active is not None else None
        if run is not None:
            return run
        runs = find_runs(self.viewer)
        return runs[0] if runs else None

    def _on_layers_changed(self, event=None):
        run = self._current_run()
        if run is self.run:
            return
        self.run = run
        self.selection = None
        self._fill_atom_list()
        self._clear_axes()
        self.canvas.draw_idle()
        if run is not None and run.scan_shape == (1, 1):
            self.show_pixel(0, 0)  # a single spectrum: nothing to click, show it at once

    def _fill_atom_list(self):
        self.atom_list.blockSignals(True)
        self.atom_list.clear()
        table = None if self.run is None else self.run.result.atoms_table
        if table is not None:
            for i, row in table.iterrows():
                ok = "" if bool(row["usable"]) else "  (unusable)"
                self.atom_list.addItem(f"atom {int(row['atom'])}: y {row['y_px']:.1f}, "
                                       f"x {row['x_px']:.1f} px{ok}")
        self.atom_list.blockSignals(False)

    # ---- input
    def _on_click(self, viewer, event):
        """Press and release without dragging: show what lies there (a drag pans, no more)."""
        if event.type != "mouse_press" or event.button not in (1, None):
            return
        position = tuple(event.position[-2:])
        yield
        if event.type == "mouse_move":
            return  # a drag: the camera pans, nothing is picked
        try:
            self.show_world(position)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a silent no-op
            from napari.utils.notifications import show_error

            self.status.setText(f"error: {exc}")
            show_error(f"napari-corefit inspector: {type(exc).__name__}: {exc}")

    def _on_list_row(self, row):
        if row >= 0:
            self.show_atom(row)

    def show_world(self, yx):
        """Show the atom column at world position ``yx`` (within its marker) or the pixel."""
        run = self.run or self._current_run()
        if run is None:
            self.status.setText("no corefit result in the viewer: run 'Process spectrum image'")
            return None
        self.run = run
        py, px = run.world_to_pixel(yx)
        ny, nx = run.scan_shape
        table = run.result.atoms_table
        if table is not None and len(table):
            d = np.hypot(table["y_px"].to_numpy() - py, table["x_px"].to_numpy() - px)
            i = int(np.argmin(d))
            size = self._marker_size(run)
            if d[i] <= _PICK_FRACTION * size:
                return self.show_atom(i)
        iy, ix = int(np.floor(py + 0.5)), int(np.floor(px + 0.5))
        if not (0 <= iy < ny and 0 <= ix < nx):
            self.status.setText(f"outside the scan (y {py:.1f}, x {px:.1f} px; the scan is "
                                f"{ny} x {nx} px)")
            return None
        return self.show_pixel(iy, ix)

    def _marker_size(self, run):
        name = run.names.get("atoms")
        if name in self.viewer.layers:
            size = np.asarray(self.viewer.layers[name].size, dtype=float)
            if size.size:
                return float(np.median(size))
        return 2.0

    def show_atom(self, i):
        run = self.run
        table = run.result.atoms_table
        if table is None or not 0 <= i < len(table):
            return None
        self.selection = ("atom", int(i))
        row = table.iloc[i]
        e_in, spec, reason = run.atom_input(i)
        mean, std = run.atom_dos(i)
        title = f"atom {int(row['atom'])} ({int(row['n_pixels'])} px summed)"
        self._plot(title, e_in, spec, reason, run.dos_energy, mean, std)
        self._fill_table([(k, row[k]) for k in table.columns])
        if self.atom_list.currentRow() != i:
            self.atom_list.blockSignals(True)
            self.atom_list.setCurrentRow(i)
            self.atom_list.blockSignals(False)
        self._select_point(i)
        self.status.setText(title + ("" if bool(row["usable"]) else f": {reason}"))
        return self.selection

    def show_pixel(self, iy, ix):
        run = self.run
        self.selection = ("pixel", int(iy), int(ix))
        e_in, spec, reason = run.pixel_input(iy, ix)
        mean, std = run.pixel_dos(iy, ix)
        y, x = run.pixel_to_world((iy, ix))
        title = "single spectrum" if run.scan_shape == (1, 1) else f"pixel (y {iy}, x {ix})"
        self._plot(title, e_in, spec, reason, run.dos_energy, mean, std)
        rows = [("y_px", iy), ("x_px", ix), ("y (world)", y), ("x (world)", x)]
        for key, sig in run.result.maps.items():
            rows.append((key, np.asarray(sig.data).reshape(run.scan_shape)[iy, ix]))
        self._fill_table(rows)
        self.atom_list.blockSignals(True)
        self.atom_list.clearSelection()
        self.atom_list.setCurrentRow(-1)
        self.atom_list.blockSignals(False)
        self.status.setText(title + ("" if spec is not None else f": masked, {reason}"))
        return self.selection

    def _select_point(self, i):
        name = self.run.names.get("atoms")
        if name in self.viewer.layers:
            self.viewer.layers[name].selected_data = {int(i)}

    def keyPressEvent(self, event):  # arrow keys step through the atoms
        key = event.key()
        if key in (Qt.Key_Down, Qt.Key_Right, Qt.Key_Up, Qt.Key_Left) and self.atom_list.count():
            step = 1 if key in (Qt.Key_Down, Qt.Key_Right) else -1
            self.step(step)
            return
        super().keyPressEvent(event)

    def step(self, n=1):
        """Show the atom ``n`` places after (before, n < 0) the current one."""
        count = self.atom_list.count()
        if not count:
            return None
        cur = self.selection[1] if self.selection and self.selection[0] == "atom" else -1
        return self.show_atom((cur + n) % count)

    # ---- drawing
    def _clear_axes(self):
        with _style(self):
            for ax in (self.ax_input, self.ax_dos):
                ax.clear()
            self.ax_input.set_xlabel("energy loss rel. first peak (eV)")
            self.ax_input.set_ylabel("normalised intensity (1/eV)")
            self.ax_input.set_title("measured (preprocessed)", fontsize="small")
            self.ax_dos.set_xlabel("E - E_F (eV)")
            self.ax_dos.set_ylabel("C s+p DOS (1/eV)")
            self.ax_dos.set_title("predicted DOS", fontsize="small")
        self.plotted = {}

    def _plot(self, title, e_in, spec, reason, e_dos, mean, std):
        self._clear_axes()
        with _style(self):
            ax = self.ax_input
            if spec is not None:
                ax.plot(e_in, spec, color="#cccccc", lw=1.2)
            else:
                ax.text(0.5, 0.5, f"masked:\n{reason}", ha="center", va="center",
                        transform=ax.transAxes, fontsize="small", wrap=True)
            ax = self.ax_dos
            for k, (label, color) in enumerate([("occupied", "#f28e2b"),
                                                ("unoccupied", "#4e9be0")]):
                m, s = np.asarray(mean[k], float), np.asarray(std[k], float)
                if np.isfinite(m).any():
                    ax.fill_between(e_dos, m - s, m + s, color=color, alpha=0.3, lw=0)
                    ax.plot(e_dos, m, color=color, lw=1.5, label=f"{label} +- sigma")
            if np.isfinite(np.asarray(mean, float)).any():
                ax.axvline(0.0, color="gray", lw=0.8, ls=":")
                ax.legend(fontsize="x-small", loc="upper left")
            else:
                ax.text(0.5, 0.5, "no prediction\n(masked)", ha="center", va="center",
                        transform=ax.transAxes, fontsize="small")
            self.figure.suptitle(title, fontsize="small")
        self.plotted = {"input_energy": np.asarray(e_in), "input": spec,
                        "dos_energy": np.asarray(e_dos),
                        "occupied": np.asarray(mean[0]), "unoccupied": np.asarray(mean[1]),
                        "occupied_std": np.asarray(std[0]),
                        "unoccupied_std": np.asarray(std[1])}
        self.canvas.draw_idle()

    def _fill_table(self, rows):
        self.table.setRowCount(len(rows))
        for r, (k, v) in enumerate(rows):
            self.table.setItem(r, 0, QTableWidgetItem(str(k)))
            self.table.setItem(r, 1, QTableWidgetItem(_fmt(v)))
        self.table.resizeColumnsToContents()

    def closeEvent(self, event):
        self._disconnect()
        super().closeEvent(event)

    def _disconnect(self):
        if self._on_click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._on_click)


def _fmt(v):
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "nan" if not np.isfinite(v) else f"{float(v):.4g}"
    return str(v)


class _style:
    """The napari-matplotlib theme as a context manager."""

    def __init__(self, widget):
        self.widget = widget

    def __enter__(self):
        import matplotlib.style as mplstyle

        self._ctx = mplstyle.context(self.widget.napari_theme_style_sheet)
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
