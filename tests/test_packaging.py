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
