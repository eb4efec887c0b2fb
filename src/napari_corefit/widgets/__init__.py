"""napari widgets (the only place with Qt): process a spectrum image, inspect atoms, export.

Each widget takes the viewer and only calls the engine (:mod:`napari_corefit.engine`); the
manifest ``napari.yaml`` contributes them to napari's Plugins menu.
"""

from napari_corefit.widgets.export import ExportWidget
from napari_corefit.widgets.inspector import AtomInspector
from napari_corefit.widgets.process import ProcessWidget

__all__ = ["AtomInspector", "ExportWidget", "ProcessWidget"]
