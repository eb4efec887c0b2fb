"""The installed package: napari manifest, plugin discovery, console script."""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import napari_corefit
from napari_corefit.io import SUPPORTED_EXTENSIONS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=300)


def test_npe2_validate_with_imports():
    # --imports also imports every python_name the manifest names
    result = run(sys.executable, "-m", "npe2", "validate", "--imports", "napari-corefit")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_manifest_is_registered_and_its_reader_matches_the_io_extensions():
    import npe2

    entry_points = metadata.entry_points(group="napari.manifest")
    assert "napari-corefit" in {ep.name for ep in entry_points}
    manifest = npe2.PluginManifest.from_distribution("napari-corefit")
    (reader,) = manifest.contributions.readers
    assert sorted(reader.filename_patterns) == sorted(f"*{e}" for e in SUPPORTED_EXTENSIONS)
    assert reader.accepts_directories  # .zspy is a directory


def test_napari_lists_the_plugin_and_offers_its_reader():
    import napari.plugins  # noqa: F401 - napari sets up its npe2 plugin manager on import
    from npe2 import PluginManager

    pm = PluginManager.instance()  # the manager napari reads its plugins from
    pm.discover()
    assert "napari-corefit" in {m.name for m in pm.iter_manifests()}
    for ext in SUPPORTED_EXTENSIONS:
        readers = {r.command for r in pm.iter_compatible_readers([f"scan{ext}"])}
        assert "napari-corefit.get_reader" in readers, ext


def test_corefit_version_and_help():
    corefit = BIN / ("corefit.exe" if os.name == "nt" else "corefit")
    assert corefit.exists(), "console script not installed next to the interpreter"
    result = run(str(corefit), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"corefit {napari_corefit.__version__}"
    result = run(str(corefit), "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: corefit" in result.stdout


def test_version_matches_distribution_metadata():
    assert metadata.version("napari-corefit") == napari_corefit.__version__


@pytest.mark.parametrize("script", ["install.sh", "test.sh", "demo.sh"])
def test_setup_scripts_are_valid_bash(script):
    path = ROOT / "scripts" / script
    result = run("bash", "-n", str(path))
    assert result.returncode == 0, result.stderr


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in ci.splitlines()
    assert "bash scripts/test.sh" in readme
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


_HIDE_GUI = '''
import importlib.abc, sys
GUI = ("napari", "qtpy", "magicgui", "napari_matplotlib", "PyQt5", "PyQt6", "PySide2", "PySide6",
       "superqt", "vispy")

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in GUI:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: a core install)")
        return None

sys.meta_path.insert(0, Hide())
'''


def test_the_engine_and_predict_run_without_the_gui_packages(tmp_path):
    """A core install (``pip install napari-corefit``, no [gui]/[napari] extra) runs the engine
    and ``corefit predict``: every GUI package is made unimportable in a fresh interpreter."""
    import subprocess
    import sys

    import numpy as np

    from napari_corefit.spectra.synthetic import synthetic_si

    e, counts, _ = synthetic_si((4, 4), edge_counts=3000, seed=1)
    np.savez(tmp_path / "si.npz", e=e, counts=counts)
    code = _HIDE_GUI + f'''
import numpy as np, hyperspy.api as hs
d = np.load({str(tmp_path / "si.npz")!r})
s = hs.signals.Signal1D(d["counts"])
ax = s.axes_manager.signal_axes[0]
ax.name, ax.units, ax.offset, ax.scale = "Energy loss", "eV", float(d["e"][0]), float(d["e"][1] - d["e"][0])
s.save({str(tmp_path / "si.hspy")!r})
import napari_corefit.engine
from napari_corefit.cli import main
rc = main(["predict", {str(tmp_path / "si.hspy")!r}, "-o", {str(tmp_path / "out.hspy")!r},
           "--device", "cpu", "-q"])
assert rc == 0, rc
loaded = [m for m in sys.modules if m.split(".")[0] in GUI]
assert not loaded, loaded
print("ok")
'''
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
    assert (tmp_path / "out.hspy").exists()
