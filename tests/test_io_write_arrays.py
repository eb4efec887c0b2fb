"""write_results takes numpy arrays with their axes (the README's example), signals as before."""

import hyperspy.api as hs
import numpy as np
import pytest

from napari_corefit.io import CorefitIOError, write_results


def test_readme_example_with_arrays_and_axes(tmp_path):
    dos = np.zeros((4, 5, 300), np.float32)  # (y, x, energy)
    axes = [{"name": "y", "units": "nm", "scale": 0.1, "offset": 0.0},
            {"name": "x", "units": "nm", "scale": 0.1, "offset": 0.0},
            {"name": "Energy relative to E_F", "units": "eV", "scale": 0.1, "offset": -15.0}]
    written = write_results(tmp_path / "out" / "result.hspy", {"": dos, "std": 0.1 * dos},
                            axes=axes)
    assert [p.name for p in written] == ["result.hspy", "result_std.hspy"]
    s = hs.load(written[1])
    assert s.data.shape == (4, 5, 300)
    assert [a.name for a in s.axes_manager.navigation_axes] == ["x", "y"]
    e = s.axes_manager.signal_axes[0]
    assert (e.name, e.units, e.offset, e.scale) == ("Energy relative to E_F", "eV", -15.0, 0.1)


def test_arrays_without_axes_or_with_wrong_ones_are_refused(tmp_path):
    with pytest.raises(CorefitIOError, match="has no axes: pass axes="):
        write_results(tmp_path / "a.hspy", np.zeros((2, 3)))
    with pytest.raises(CorefitIOError, match="2 axes given for an array of shape"):
        write_results(tmp_path / "a.hspy", np.zeros((2, 3, 4)),
                      axes=[{"name": "x"}, {"name": "E"}])
    with pytest.raises(CorefitIOError, match="has size 5, the array 3"):
        write_results(tmp_path / "a.hspy", np.zeros((3, 4)),
                      axes=[{"name": "x", "size": 5}, {"name": "E"}])
    assert not list(tmp_path.iterdir())
