"""Screenshot of napari with corefit's result layers and the atom inspector docked.

Run under a display (Xvfb + Mesa)::

    xvfb-run -a -s "-screen 0 1920x1200x24" python tests/widgets/make_screenshot.py \
        --model DIR --out docs/images/napari_corefit_viewer.png

``--model`` defaults to the bundled model. Not a test (pytest does not collect this file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model directory (default: the bundled model)")
    p.add_argument("--out", default="docs/images/napari_corefit_viewer.png")
    p.add_argument("--atom", type=int, default=None, help="atom shown in the inspector")
    p.add_argument("--energy", type=float, default=1.5, help="DOS energy on the slider (eV)")
    args = p.parse_args(argv)

    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_corefit.widgets import AtomInspector, ProcessWidget

    viewer = napari.Viewer(title="napari-corefit")
    viewer.window._qt_window.resize(1800, 1100)
    viewer.open_sample("napari-corefit", "corefit_sample")
    process = ProcessWidget(viewer)
    inspector = AtomInspector(viewer)
    viewer.window.add_dock_widget(process, name="Process spectrum image", area="left")
    viewer.window.add_dock_widget(inspector, name="Atom inspector", area="right")
    if args.model:
        process.model_source.value = "model folder"
        process.model_dir.value = args.model
    if process.run() is None or not process.wait(600):
        sys.exit(f"the run did not start or finish: {process.status.text()}")
    outcome = process.last_outcome
    if outcome.result is None:
        sys.exit(f"the run failed: {outcome.error}")
    run = inspector.run
    table = outcome.result.atoms_table
    for layer in viewer.layers:
        layer.visible = False
    adf = next(ly for ly in viewer.layers if ly.metadata.get("kind") == "adf")
    adf.visible = True
    adf.reset_contrast_limits()
    dos = viewer.layers[run.names["unoccupied"]]
    dos.visible, dos.opacity, dos.blending = True, 0.6, "additive"
    atoms = viewer.layers[run.names["atoms"]]
    atoms.visible, atoms.opacity = True, 0.9
    viewer.layers.selection.active = atoms
    viewer.dims.set_point(0, args.energy)
    viewer.reset_view()
    i = args.atom
    if i is None:  # the best-fitted usable column
        ok = table[table["usable"]]
        i = int(ok.sort_values("fit_quality", ascending=False).index[0]) if len(ok) else 0
    inspector.show_atom(i)
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for _ in range(50):
        QApplication.processEvents()
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    for _ in range(50):
        QApplication.processEvents()
    img = viewer.screenshot(canvas_only=False, flash=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from imageio.v3 import imwrite

    imwrite(out, np.asarray(img))
    print(out, img.shape)
    viewer.close()


if __name__ == "__main__":
    main()
