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
    assert "converged by diis 6" in summary.stdout  # the solver stages, counted


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


def test_forget_then_build_computes_those_molecules_again(tmp_path):
    """`db forget` takes molecules out of the finished shards (nothing else changes) and the
    next build of the same source computes exactly those again."""
    from napari_corefit.backend import load_database

    db = tmp_path / "db"
    build = ("db", "build", "--source", "qm9", "--max-heavy", "2", "-o", str(db), "--workers",
             "2", "--quiet")
    assert _corefit(*build).returncode == 0
    before = load_database(db)
    # nothing selected by the stage filter: a real database has no site of a made-up stage
    out = _corefit("db", "forget", str(db), "--stage", "no-such-stage")
    assert out.returncode == 0 and "forgot 0 molecules" in out.stderr
    dry = _corefit("db", "forget", str(db), "--below", "287.0", "--dry-run")
    low = dry.stdout.split()
    energies = dict(zip(before.molecules["key"], before.sites["excitation_energy"]))
    assert low and sorted(low) == sorted(k for k, e in energies.items() if e < 287.0)
    # --in: what another database holds (here a copy holding only acetylene, QM9 #4)
    other = tmp_path / "other"
    other.mkdir()
    import shutil

    for p in db.glob("*.h5"):
        shutil.copy(p, other / p.name)
    assert _corefit("db", "forget", str(other), "--keys", "qm9:000001", "qm9:000006",
                    "qm9:000007", "qm9:000008").returncode == 0
    assert set(load_database(other).molecules["key"]) == {"qm9:000004", "qm9:000005"}
    assert _corefit("db", "forget", str(other), "--keys", "qm9:000005").returncode == 0
    out = _corefit("db", "forget", str(db), "--in", str(other))
    assert out.returncode == 0 and "forgot 1 molecules" in out.stderr
    mid = load_database(db)
    assert "qm9:000004" not in set(mid.molecules["key"]) and mid.n_molecules == 5
    # build --skip-held-by: what another database holds is left out of the selection (here
    # acetylene, QM9 #4, of #4-#5), so a build can take new molecules before recomputing those
    fresh = tmp_path / "fresh"
    skip = ("db", "build", "--source", "qm9", "--ids", "4-5", "-o", str(fresh), "--workers",
            "1", "--quiet", "--skip-held-by")
    out = _corefit(*skip, str(other))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "1 of 2 selected molecules are held by" in out.stderr
    assert set(load_database(fresh).molecules["key"]) == {"qm9:000005"}
    out = _corefit(*skip, str(tmp_path / "nowhere"))
    assert out.returncode != 0 and "no database at" in out.stderr
    kept = [k for k in before.molecules["key"] if k != "qm9:000004"]
    for key in kept:
        i, j = (list(t.molecules["key"]).index(key) for t in (before, mid))
        assert before.sites["excitation_energy"][i] == mid.sites["excitation_energy"][j]
    again = _corefit(*build)
    assert again.returncode == 0
    assert '"computed": 1,' in again.stderr, again.stderr[-500:]
    after = load_database(db)
    assert after.n_molecules == 6
    i = list(after.molecules["key"]).index("qm9:000004")
    j = list(before.molecules["key"]).index("qm9:000004")
    assert after.sites["excitation_energy"][i] == pytest.approx(
        before.sites["excitation_energy"][j], abs=1e-4)


def test_bundle_build_elsewhere_and_merge_back(tmp_path):
    """The bigger-machine workflow (docs/backend.md): bundle what is not computed yet, build it
    from the bundle alone (no qm9pack there), merge the shards back under fresh part numbers."""
    from napari_corefit.backend import load_database
    from napari_corefit.backend.molecules import read_xyz_bundle

    here = tmp_path / "here"
    assert _corefit("db", "build", "--source", "qm9", "--ids", "1-4", "-o", str(here),
                    "--workers", "1", "--quiet").returncode == 0
    done = set(load_database(here).molecules["key"])
    assert done == {"qm9:000001", "qm9:000004"}  # methane, acetylene (2, 3 have no carbon)
    bundle = tmp_path / "todo.xyz"
    out = _corefit("db", "xyz-bundle", "--max-heavy", "2", "--skip-held-by", str(here),
                   "--largest-first", "-o", str(bundle))
    assert out.returncode == 0, out.stderr[-2000:]
    mols = read_xyz_bundle(bundle)
    assert {m.key for m in mols} == {"qm9:000005", "qm9:000006", "qm9:000007", "qm9:000008"}
    assert mols[0].key == "qm9:000007"  # ethane, the only one with two carbons, goes first
    there = tmp_path / "there"
    out = _corefit("db", "build", "--xyz", str(bundle), "-o", str(there), "--workers", "2",
                   "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    # both directories wrote part 0 of the same shard; the merge gives the newcomer part 1
    assert {p.name for p in here.glob("*.h5")} == {p.name for p in there.glob("*.h5")}
    out = _corefit("db", "merge", str(there), "-o", str(here))
    assert out.returncode == 0 and "merged 1 shard parts" in out.stderr, out.stderr[-2000:]
    assert len(list(here.glob("*.h5"))) == 2
    table = load_database(here)
    assert set(table.molecules["key"]) == done | {m.key for m in mols}
    assert (table.sites["status"] == "ok").all()
