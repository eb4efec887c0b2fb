"""Shared fixtures: a tiny database computed by the real backend, once per test session."""

from __future__ import annotations

import os

import pytest

# PySCF's BLAS and OpenMP: one thread per process keeps the 2-core CI machine predictable
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: small molecules (SMILES, GFN2-xTB geometries): 14 molecules, 17 distinct carbon sites
TINY_SMILES = ["C", "CC", "C=C", "C#C", "C#N", "CO", "C=O", "CC=O", "CCO", "NC=O", "OC=O",
               "CF", "CC#N", "C1CC1"]


@pytest.fixture(scope="session")
def tiny_db(tmp_path_factory):
    """Path of a database with the molecules of ``TINY_SMILES`` (real PySCF calculations)."""
    from napari_corefit.backend import Molecule
    from napari_corefit.backend.runner import build_database

    path = tmp_path_factory.mktemp("tiny_db") / "db"
    cache = os.environ.get("COREFIT_TEST_DB_CACHE")
    if cache and os.path.isdir(cache):
        return cache  # a developer's shortcut: reuse a database built before
    mols = [Molecule.from_smiles(s) for s in TINY_SMILES]
    build_database(mols, path, workers=2, threads=1, progress=False)
    return path


@pytest.fixture(scope="session")
def tiny_table(tiny_db):
    from napari_corefit.backend import load_database

    return load_database(tiny_db)
