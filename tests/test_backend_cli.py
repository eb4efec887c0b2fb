"""The backend from the command line: a QM9 build and `corefit compute`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

pytest.importorskip("pyscf")
if importlib.util.find_spec("qm9pack") is None:  # its __init__ needs pkg_resources: not imported
    pytest.skip("qm9pack is not installed", allow_module_level=True)


def _corefit(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "napari_corefit.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_qm9_build_small_molecules(tmp_path):
    db = tmp_path / "db"
    out = _corefit("db", "build", "--source", "qm9", "--max-heavy", "2", "-o", str(db),
                   "--workers", "2", "--quiet")
    assert out.returncode == 0, out.stderr[-3000:]
    info = _corefit("db", "info", str(db), "--json")
    rows = [json.loads(line) for line in info.stdout.splitlines()]
    # QM9 1-8 with carbon: methane, acetylene, HCN, formaldehyde, ethane, methanol
    assert sorted({r["smiles"] for r in rows}) == sorted(["C", "C#C", "C#N", "C=O", "CC", "CO"])
    assert all(r["status"] == "ok" for r in rows)
    assert all(r["molecule"].startswith("qm9_") for r in rows)
    by = {r["smiles"]: r for r in rows}
    assert by["CC"]["multiplicity"] == 2 and by["C#C"]["multiplicity"] == 2
    # saturated carbons absorb above unsaturated ones
    assert by["C"]["excitation_energy_ev"] > by["C#C"]["excitation_energy_ev"]
    summary = _corefit("db", "info", str(db))
    assert "sites 6 (6 ok, 0 failed)" in summary.stdout


def test_compute_one_molecule_with_plot(tmp_path):
    png = tmp_path / "acetone.png"
    out = _corefit("compute", "CC(C)=O", "--json", "--plot", str(png))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 2  # methyl carbons are equivalent: 2 distinct sites of 3 carbons
    assert sorted(r["multiplicity"] for r in rows) == [1, 2]
    carbonyl = next(r for r in rows if r["multiplicity"] == 1)
    methyl = next(r for r in rows if r["multiplicity"] == 2)
    # C=O carbon: 1s -> pi* lowest (acetone, experiment 286.4 eV)
    assert abs(carbonyl["excitation_energy_ev"] - 286.4) < 1.0
    assert carbonyl["core_1s_ev"] < methyl["core_1s_ev"]  # the carbonyl 1s is bound deeper
    assert png.stat().st_size > 10_000
    assert "[2/2]" in out.stderr  # progress on stderr


def test_compute_rejects_a_bad_molecule(tmp_path):
    out = _corefit("compute", "not-a-smiles((")
    assert out.returncode == 2
    assert "cannot parse SMILES" in out.stderr
