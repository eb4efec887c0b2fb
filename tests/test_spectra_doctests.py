"""The Examples in the spectra modules' docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["align", "background", "denoise", "grids", "masks", "peaks", "pipeline", "resolution",
           "smoothing", "synthetic"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"napari_corefit.spectra.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 or name == "denoise"
    assert result.failed == 0
