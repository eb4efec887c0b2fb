"""Export dock widget: the per-atom table as CSV, the result signals as ``.hspy``.

Buttons open a file dialog; :meth:`ExportWidget.export_csv` and :meth:`ExportWidget.export_hspy`
do the work (scripts and tests call them with a path). The run exported is the newest one in the
viewer, or the one of the selected layer.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_corefit.widgets._layers import find_runs

__all__ = ["ExportWidget"]


class ExportWidget(QWidget):
    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.csv_button = QPushButton("Save atom table (CSV)...")
        self.hspy_button = QPushButton("Save results (.hspy)...")
        self.csv_button.clicked.connect(self._ask_csv)
        self.hspy_button.clicked.connect(self._ask_hspy)
        self.status = QLabel("exports the newest corefit result (or the selected layer's)")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        for w in (self.csv_button, self.hspy_button, self.status):
            layout.addWidget(w)
        layout.addStretch(1)

    def _run(self):
        active = self.viewer.layers.selection.active
        run = active.metadata.get("corefit_run") if active is not None else None
        if run is None:
            runs = find_runs(self.viewer)
            run = runs[0] if runs else None
        if run is None:
            raise ValueError("no corefit result in the viewer: run 'Process spectrum image' "
                             "first")
        return run

    def export_csv(self, path):
        """Write the per-atom table of the current run to ``path`` (CSV). Returns the path."""
        run = self._run()
        table = run.result.atoms_table
        if table is None:
            raise ValueError("this result has no atom columns (run with 'find atom columns')")
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path.with_suffix(".csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
        return path

    def export_hspy(self, path):
        """Write the current run's result signals (:meth:`EngineResult.save`). Returns paths."""
        run = self._run()
        path = Path(path)
        if path.suffix.lower() not in (".hspy", ".zspy"):
            path = path.with_suffix(".hspy")
        return run.result.save(path)

    def _ask(self, caption, filt, action):
        from napari.utils.notifications import show_error, show_info

        try:
            run = self._run()
        except ValueError as exc:
            show_error(f"napari-corefit: {exc}")
            return None
        path, _ = QFileDialog.getSaveFileName(self, caption, f"{run.base}_corefit", filt)
        if not path:
            return None
        try:
            out = action(path)
        except Exception as exc:  # noqa: BLE001 - shown to the user with its cause
            show_error(f"napari-corefit: export failed: {exc}")
            return None
        names = ", ".join(str(p) for p in (out if isinstance(out, list) else [out]))
        self.status.setText(f"written: {names}")
        show_info(f"napari-corefit: written {names}")
        return out

    def _ask_csv(self):
        return self._ask("Save the per-atom table", "CSV (*.csv)", self.export_csv)

    def _ask_hspy(self):
        return self._ask("Save the corefit results", "HyperSpy (*.hspy)", self.export_hspy)
