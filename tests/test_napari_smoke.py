"""napari itself: a viewer opens a spectrum image through the plugin (needs a display: Xvfb)."""

import os
import sys

import hyperspy.api as hs
import numpy as np
import pytest

# without an X display Qt aborts the whole pytest process; skip with the fix instead
pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(
        sys.platform.startswith("linux") and not os.environ.get("DISPLAY"),
        reason="needs an X display: run under xvfb-run (bash scripts/test.sh does)",
    ),
]


@pytest.fixture
def si_path(tmp_path):
    data = np.random.default_rng(3).poisson(20.0, (4, 5, 120)).astype("float32")
    signal = hs.signals.Signal1D(data)
    energy = signal.axes_manager.signal_axes[0]
    energy.units, energy.offset, energy.scale = "eV", 270.0, 0.25
    for axis in signal.axes_manager.navigation_axes:
        axis.units, axis.scale = "nm", 0.1
    path = tmp_path / "smoke.hspy"
    signal.save(path)
    return path, data


def test_viewer_opens_spectrum_image_with_plugin(make_napari_viewer, si_path):
    path, data = si_path
    viewer = make_napari_viewer(show=True)  # a hidden canvas renders black
    layers = viewer.open(str(path), plugin="napari-corefit")
    assert [layer.name for layer in layers] == ["smoke survey", "smoke SI"]
    survey, cube = layers
    np.testing.assert_allclose(survey.data, data.sum(axis=-1), rtol=1e-6)
    assert cube.data.shape == (120, 4, 5)
    assert cube.metadata["signal"].metadata.Signal.signal_type == "EELS"
    assert tuple(cube.scale) == pytest.approx((0.25, 0.1, 0.1))
    # the energy axis is a slider: step to the channel nearest 285 eV
    assert viewer.dims.ndim == 3
    viewer.dims.set_point(0, 285.0)
    channel = int(round((285.0 - 270.0) / 0.25))
    assert viewer.dims.current_step[0] == channel
    # the canvas draws (OpenGL through Mesa under Xvfb): the survey image is not a blank frame
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot.shape[-1] == 4
    # 4 x 5 survey pixels of distinct counts: many grey levels, not one clear colour
    assert np.unique(shot[..., :3].reshape(-1, 3), axis=0).shape[0] > 10
