"""Database storage: crash safety (kill -9 and resume), Dask runner, CLI output."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("pyscf")

from napari_corefit.backend import Molecule, load_database  # noqa: E402
from napari_corefit.backend.storage import finished_keys, journal_keys, shard_key  # noqa: E402

SMILES = ["C", "CC", "C=C", "C#N", "CO", "C=O"]


def _journal_count(db):
    """Distinct molecules in journals and shards, read without taking a write lock.

    Distinct keys, not a sum of counts: between a shard's rename and its journal's deletion the
    same molecules sit in both.
    """
    keys = set()
    for p in (Path(db) / ".journal").glob("*.sqlite"):
        try:
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5)
            keys.update(k for (k,) in con.execute("SELECT key FROM records"))
            con.close()
        except sqlite3.Error:
            pass
    for p in Path(db).glob("*.h5"):
        try:
            keys |= finished_keys(db, p.name.split(".p")[0])
        except OSError:  # a part renamed or removed while listing
            pass
    return len(keys)


def _start(smiles_file, db, workers=1):
    cmd = [sys.executable, "-m", "napari_corefit.cli", "db", "build", "--smiles",
           str(smiles_file), "-o", str(db), "--workers", str(workers), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _kill(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_and_resume(tmp_path):
    smiles_file = tmp_path / "mols.smi"
    smiles_file.write_text("\n".join(f"{s} m{i}" for i, s in enumerate(SMILES)) + "\n")
    db = tmp_path / "db"
    # kill -9 after the first journalled molecule, after the third, and at a random moment
    for target in (1, 3):
        proc = _start(smiles_file, db)
        t0 = time.time()
        while _journal_count(db) < target and time.time() - t0 < 300:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        _kill(proc)
        assert _journal_count(db) >= target
    proc = _start(smiles_file, db)
    time.sleep(4.0)
    _kill(proc)
    before = _journal_count(db)
    proc = _start(smiles_file, db)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    table = load_database(db)
    keys = list(table.molecules["key"])
    assert len(keys) == len(set(keys)) == len(SMILES)
    assert before <= len(SMILES)
    assert not journal_keys(db)  # every shard finished, journals gone
    assert table.sites["ok"].all()
    # a rerun computes nothing
    proc = _start(smiles_file, db)
    _, err = proc.communicate(timeout=300)
    assert b'"computed": 0' in err


def _start_past_first_molecule(tmp_path, smiles):
    """A 2-worker build of ``smiles``, returned once its first molecule is journalled."""
    smiles_file = tmp_path / "mols.smi"
    smiles_file.write_text("\n".join(f"{s} m{i}" for i, s in enumerate(smiles)) + "\n")
    db = tmp_path / "db"
    proc = _start(smiles_file, db, workers=2)
    t0 = time.time()
    while _journal_count(db) < 1 and time.time() - t0 < 300 and proc.poll() is None:
        time.sleep(0.05)
    return proc, db


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_workers_at_once_and_keeps_what_is_done(tmp_path, sig):
    # more molecules than the build can finish between the first journal entry and the signal,
    # even on a loaded machine (the interrupt stops it long before the larger ones)
    smiles = SMILES + ["CCC", "CCO", "CC=O", "CCCC", "CC(C)O", "c1ccccc1"]
    proc, db = _start_past_first_molecule(tmp_path, smiles)
    done = _journal_count(db)
    proc.send_signal(sig)  # to the parent only, as `kill PID` does
    proc.communicate(timeout=20)  # not minutes: molecules in progress are dropped
    assert proc.returncode == 130
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # no worker left behind in the session
        os.killpg(proc.pid, 0)
    assert _journal_count(db) >= done >= 1


def _pool_workers(pid):
    """PIDs of the child processes of ``pid``, its pool's forked workers (read from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_a_killed_worker_costs_only_its_molecules(tmp_path):
    # the kernel's out-of-memory killer ended a worker, and with the broken pool the whole build
    # (2026-12-03); now a new pool computes the molecules that were in flight
    smiles = SMILES + ["CCC", "CCO", "CC=O", "CCCC"]
    proc, db = _start_past_first_molecule(tmp_path, smiles)
    workers = _pool_workers(proc.pid)
    assert workers and proc.poll() is None
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"a worker process died" in err
    table = load_database(db)
    keys = list(table.molecules["key"])
    assert len(keys) == len(set(keys)) == len(smiles)  # every molecule, once
    assert table.sites["ok"].all()



def test_workers_are_replaced_every_few_molecules(tmp_path, monkeypatch):
    # a long-lived worker's memory only grows (7.4 GB after ~25 large molecules)
    from napari_corefit.backend import runner

    monkeypatch.setattr(runner, "WORKER_MOLECULES", 1)
    made = []
    new = runner._Pools._new
    monkeypatch.setattr(runner._Pools, "_new", lambda self: made.append(1) or new(self))
    mols = [Molecule.from_smiles(s, optimise="mmff") for s in ("C", "CC", "C=C", "CO", "C#N")]
    stats = runner.build_database(mols, tmp_path / "db", workers=2, progress=False)
    assert stats["computed"] == 5 and stats["failed_sites"] == 0
    assert len(made) == 3  # 2 molecules a pool (1 per worker): pools for 1-2, 3-4, 5
    table = load_database(tmp_path / "db")
    assert len(set(table.molecules["key"])) == 5 and table.sites["ok"].all()


def test_dask_runner_matches_local(tmp_path):
    distributed = pytest.importorskip("distributed")
    from napari_corefit.backend.runner import build_database

    mols = [Molecule.from_smiles(s, optimise="mmff") for s in ("C", "C#N")]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        stats = build_database(mols, tmp_path / "dask", scheduler=client, progress=False)
    assert stats["computed"] == 2
    local = build_database(mols, tmp_path / "local", workers=1, progress=False)
    assert local["computed"] == 2
    a, b = load_database(tmp_path / "dask"), load_database(tmp_path / "local")
    order_a = np.argsort(a.molecules["key"][a.sites["molecule"]])
    order_b = np.argsort(b.molecules["key"][b.sites["molecule"]])
    np.testing.assert_allclose(a.sites["excitation_energy"][order_a],
                               b.sites["excitation_energy"][order_b], atol=1e-3)


def test_db_info_json(tiny_db):
    out = subprocess.run([sys.executable, "-m", "napari_corefit.cli", "db", "info",
                          str(tiny_db), "--json"], capture_output=True, check=True, text=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) >= 10
    for key in ("molecule", "smiles", "atom_index", "multiplicity", "excitation_energy_ev",
                "core_1s_ev", "hole_population", "status", "seconds"):
        assert key in rows[0]
    ethane = [r for r in rows if r["smiles"] == "CC"]
    assert len(ethane) == 1 and ethane[0]["multiplicity"] == 2
    assert all(r["status"] == "ok" for r in rows)
    # 1s orbital energies of carbon, PBE: around -270 eV
    assert all(-280 < r["core_1s_ev"] < -260 for r in rows)
    # no ionisation pass has run on it: the field is there and says so
    assert all(r["ionisation_energy_ev"] is None and r["ionisation_method"] == "" for r in rows)


def test_shard_size_budget(tiny_table):
    # SPEC: about 500 bytes per site once shards hold many molecules; the sticks alone
    # must stay well under that
    per_site = (tiny_table.spec_energy.size * 8 + tiny_table.dos_energy.size * 9) / \
        tiny_table.n_sites
    assert per_site < 500


def test_corrupt_shard_gives_clear_error(tmp_path, tiny_db):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "qm9-000000-000999.p000.h5").write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(OSError, match="not a readable database shard"):
        load_database(bad)


def test_shard_keys_are_deterministic():
    assert shard_key("qm9:000999") == "qm9-000000-000999"
    assert shard_key("qm9:001000") == "qm9-001000-001999"
    assert shard_key("smiles:CCO") == shard_key("smiles:CCO")


def test_flush_while_a_build_runs_loses_nothing(tmp_path):
    from napari_corefit.backend.storage import flush_journals

    smiles_file = tmp_path / "mols.smi"
    # one shard key for all: flushing must not pull the journal from under the running writer
    smiles_file.write_text("\n".join(SMILES) + "\n")
    db = tmp_path / "db"
    proc = _start(smiles_file, db)
    t0 = time.time()
    while _journal_count(db) < 2 and time.time() - t0 < 300 and proc.poll() is None:
        time.sleep(0.05)
    flush_journals(db)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    keys = list(load_database(db).molecules["key"])
    assert sorted(keys) == sorted(set(keys)) and len(keys) == len(SMILES)


# --------------------------------------------------------------------------- shard format
# tests/data/shard_format1.h5: 7 molecules (27 sites, SCF stages diis, levelshift and newton) of
# data/db/qm9-000000-000999.p005.h5, written by the format-1 writer before format 2 replaced it.
FORMAT1 = Path(__file__).parent / "data" / "shard_format1.h5"
# tests/data/shard_format3.h5: data/db/qm9-000000-000999.p005.h5 (308 sites) as format 3 wrote
# it, before `corefit db upgrade` rewrote data/db in format 4
FORMAT3 = Path(__file__).parent / "data" / "shard_format3.h5"


def _rewrite(src, db_dir):
    """Write the records of part ``src`` again, in the current format."""
    from napari_corefit.backend.storage import read_records, write_shard

    with h5py.File(src, "r") as f:
        recipe = json.loads(f.attrs["recipe"])
    records = read_records(src)
    Path(db_dir).mkdir(parents=True, exist_ok=True)
    return records, write_shard(db_dir, "qm9-000000-000999", records, recipe)


def _assert_same_records(a, b):
    assert [k for k, _ in a] == [k for k, _ in b]
    for (key, x), (_, y) in zip(a, b):
        assert x.keys() == y.keys()
        assert x["meta"] == y["meta"], key
        for name in set(x) - {"meta"}:  # same dtype, same shape, same bits
            assert x[name].dtype == y[name].dtype, (key, name)
            assert x[name].shape == y[name].shape, (key, name)
            assert x[name].tobytes() == y[name].tobytes(), (key, name)


def test_current_format_round_trip_is_exact(tmp_path):
    from napari_corefit.backend.storage import FORMAT_VERSION, read_records

    _, part = _rewrite(FORMAT1, tmp_path / "a")  # format 1 -> 4
    records, again = _rewrite(part, tmp_path / "b")  # format 4 -> 4: bit for bit
    with h5py.File(again, "r") as f:
        assert f.attrs["format_version"] == FORMAT_VERSION == 4
        # the versions that wrote it: a PySCF release can change the numbers (constraints.txt)
        import pyscf
        assert json.loads(f.attrs["software"])["pyscf"] == pyscf.__version__
    _assert_same_records(records, read_records(again))
    old, new = load_database(FORMAT1), load_database(part)
    assert old.recipe == new.recipe
    for name in ("spec_offsets", "spec_energy", "dos_offsets", "dos_energy",
                 "dos_s", "dos_p", "dos_occupation"):
        assert np.array_equal(getattr(old, name), getattr(new, name)), name
    # the x, y, z parts of format 1-3 became their mean in float16: half a float16 step at most
    assert new.spec_intensity.dtype == np.float32 and new.spec_intensity.ndim == 1
    np.testing.assert_allclose(new.spec_intensity, old.spec_intensity, rtol=2 ** -11, atol=0)
    for k, v in old.molecules.items():
        assert np.array_equal(v, new.molecules[k]), k
    for k, v in old.sites.items():
        if k == "equivalent":
            assert [e.tolist() for e in v] == [e.tolist() for e in new.sites[k]]
        else:
            assert np.array_equal(v, new.sites[k], equal_nan=v.dtype.kind == "f"), k


def test_format1_part_still_loads(tmp_path):
    from napari_corefit.backend.storage import finished_keys, read_records, write_shard

    with h5py.File(FORMAT1, "r") as f:
        assert f.attrs["format_version"] == 1
    table = load_database(FORMAT1)
    assert (table.n_molecules, table.n_sites) == (7, 27)
    assert set(table.sites["stage"]) == {"diis", "levelshift", "newton"}
    assert table.sites["ok"].all() and table.recipe["basis"] == "6-31G*"
    assert np.all(np.diff(table.spec_offsets) > 0) and (table.spec_intensity > 0).all()
    # a database mixing both formats: one recipe (string attributes compare equal), no loss
    db = tmp_path / "db"
    db.mkdir()
    (db / "qm9-000000-000999.p000.h5").write_bytes(FORMAT1.read_bytes())
    _, arrays = read_records(FORMAT1)[0]
    key = arrays["meta"]["key"].replace(":000", ":900")  # another molecule, same data
    write_shard(db, "qm9-000000-000999", [(key, dict(arrays, meta=dict(arrays["meta"], key=key)))],
                table.recipe)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = load_database(db)
    assert both.n_molecules == 8 and both.n_sites == table.n_sites + arrays["atom_index"].size
    assert len(finished_keys(db)) == 8


FORMAT2 = Path(__file__).parent / "data" / "shard_format2.h5"  # data/db's qm9-001000-001999.p002


def test_format2_part_loads_beside_format3_without_its_d_weights(tmp_path):
    from napari_corefit.backend.storage import read_records, write_shard

    with h5py.File(FORMAT2, "r") as f:
        assert f.attrs["format_version"] == 2
        assert "dos_d" in f["dos"].dtype.names
        n_dos = f["dos"].shape[0]
    table = load_database(FORMAT2)
    assert (table.n_molecules, table.n_sites) == (1, 5) and table.sites["ok"].all()
    assert table.dos_s.size == n_dos and not hasattr(table, "dos_d")
    db = tmp_path / "db"
    db.mkdir()
    (db / "qm9-001000-001999.p000.h5").write_bytes(FORMAT2.read_bytes())
    _, arrays = read_records(FORMAT2)[0]
    assert "dos_d" not in arrays
    key = arrays["meta"]["key"].replace(":001", ":901")
    part = write_shard(db, "qm9-001000-001999",
                       [(key, dict(arrays, meta=dict(arrays["meta"], key=key)))], table.recipe)
    with h5py.File(part, "r") as f:
        assert f.attrs["format_version"] == 4 and "dos_d" not in f["dos"].dtype.names
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = load_database(db)
    assert both.n_sites == 10
    half = both.dos_offsets[5]
    assert np.array_equal(both.dos_s[:half], both.dos_s[half:])


def test_upgrade_rewrites_older_parts_smaller_and_only_once(tmp_path):
    from napari_corefit.backend.storage import FORMAT_VERSION, upgrade_shards
    from napari_corefit.cli import main

    db = tmp_path / "db"
    db.mkdir()
    for i, src in enumerate((FORMAT1, FORMAT2, FORMAT3)):
        (db / f"qm9-00{i}000-00{i}999.p000.h5").write_bytes(src.read_bytes())
    before = load_database(db)
    size3 = (db / "qm9-002000-002999.p000.h5").stat().st_size
    assert main(["db", "upgrade", str(db)]) == 0
    parts = sorted(db.glob("*.h5"))
    assert len(parts) == 3 and "qm9-002000-002999.p000.h5" not in [p.name for p in parts]
    for p in parts:
        with h5py.File(p, "r") as f:
            assert f.attrs["format_version"] == FORMAT_VERSION
            assert f["spec"].dtype.names == ("spec_energy", "spec_weight")
    after = load_database(db)  # the rewritten parts have new names: molecules in another order

    def sticks_by_key(t):
        off, dof, mol = t.spec_offsets, t.dos_offsets, t.sites["molecule"]
        return {key: [(t.spec_energy[off[i]:off[i + 1]], t.spec_intensity[off[i]:off[i + 1]],
                       t.dos_s[dof[i]:dof[i + 1]]) for i in np.flatnonzero(mol == m)]
                for m, key in enumerate(t.molecules["key"])}

    old, new = sticks_by_key(before), sticks_by_key(after)
    assert old.keys() == new.keys() and after.n_sites == before.n_sites
    for key in old:
        for (e0, w0, s0), (e1, w1, s1) in zip(old[key], new[key], strict=True):
            assert np.array_equal(e0, e1) and np.array_equal(s0, s1), key
            np.testing.assert_allclose(w1, w0, rtol=2 ** -11, atol=0, err_msg=key)
    # one weight per stick instead of three parts: the 308-site part loses a quarter
    assert parts[2].stat().st_size < 0.8 * size3
    assert upgrade_shards(db) == [] and sorted(db.glob("*.h5")) == parts


def test_stored_dos_weights_keep_seven_significand_bits():
    from napari_corefit.backend.records import round_significand

    rng = np.random.default_rng(0)
    x = 10 ** rng.uniform(-3, 0, 10000)
    r = round_significand(x, 7).astype(np.float64)
    rel = np.abs(r - x) / x
    assert rel.max() < 2 ** -7 + 1e-3  # half a step of 7 bits, plus float16's own rounding
    assert np.all(r.astype(np.float16).view(np.uint16) & 0b111 == 0)  # the low 3 bits are zero
    assert np.array_equal(round_significand(x, 10), x.astype(np.float16))


def test_newer_format_is_refused(tmp_path):
    _, part = _rewrite(FORMAT1, tmp_path)
    with h5py.File(part, "r+") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(ValueError, match="shard format 99"):
        load_database(part)


def test_shard_bytes_per_site(tmp_path):
    # SPEC: all shards <= 15 MB, about 500 bytes per site. The 27-site part: what each site
    # adds beyond an empty part's fixed cost
    from napari_corefit.backend.storage import write_shard

    _, part = _rewrite(FORMAT1, tmp_path / "a")
    (tmp_path / "b").mkdir()
    empty = write_shard(tmp_path / "b", "empty", [], {})
    n = load_database(part).n_sites
    assert (part.stat().st_size - empty.stat().st_size) / n < 350
    # a real 308-site part, file overhead included: 701 bytes per site in format 1, 470 in
    # format 2, ~400 in format 3
    _, part = _rewrite(FORMAT3, tmp_path / "c")
    assert part.stat().st_size / load_database(part).n_sites < 320


def test_timeout_counts_cpu_time_not_wall_time(monkeypatch):
    # a molecule is failed for the computing it needs, not for time its process did not run
    # (a suspended machine, a busy one): the limit is on CPU time
    from napari_corefit.backend import Recipe, runner

    mol = Molecule.from_smiles("C", optimise="mmff")

    def sleeps(molecule, recipe):
        time.sleep(1.5)
        raise ValueError("slept past the limit")

    def computes(molecule, recipe):
        t0 = time.process_time()
        while time.process_time() - t0 < 5.0:
            sum(range(1000))
        raise ValueError("not stopped")

    for work, expected in ((sleeps, "ValueError: slept"), (computes, "timeout after 1.0 CPU s")):
        monkeypatch.setattr(runner, "compute_molecule", work)
        key, arrays = runner.compute_record(mol, Recipe(), timeout=1.0)
        assert key == mol.key
        assert expected in json.loads(arrays["meta"].tobytes())["status"]


def test_timeout_swallowed_once_still_ends_the_molecule(monkeypatch):
    # a limit whose exception is dropped on the way (a finaliser, a bare except in a library)
    # must fire again: the molecule fails as timed out rather than running on without a limit
    from napari_corefit.backend import Recipe, runner

    mol = Molecule.from_smiles("C", optimise="mmff")
    swallowed = []

    def swallows_then_computes(molecule, recipe):
        t0 = time.process_time()
        try:
            while time.process_time() - t0 < 5.0:
                sum(range(1000))
        except BaseException:  # noqa: BLE001 - what a careless library does
            swallowed.append(True)
        t0 = time.process_time()
        while time.process_time() - t0 < 5.0:
            sum(range(1000))
        raise ValueError("not stopped")

    monkeypatch.setattr(runner, "compute_molecule", swallows_then_computes)
    _, arrays = runner.compute_record(mol, Recipe(), timeout=0.5)
    assert swallowed == [True]
    assert json.loads(arrays["meta"].tobytes())["status"] == "failed: timeout after 0.5 CPU s"


def test_timeout_inside_a_real_site_fails_the_molecule():
    # the limit fires inside PySCF, within a site's own error handling: it must still end the
    # molecule (not fail one site with an empty message and let the molecule run on)
    from napari_corefit.backend import Recipe, runner

    mol = Molecule.from_smiles("CC", optimise="mmff")
    key, arrays = runner.compute_record(mol, Recipe(), timeout=0.3)
    meta = json.loads(arrays["meta"].tobytes())
    assert meta["status"] == "failed: timeout after 0.3 CPU s"


def test_a_build_never_adds_records_of_another_recipe(tmp_path):
    from dataclasses import replace

    from napari_corefit.backend import Recipe
    from napari_corefit.backend.runner import build_database
    from napari_corefit.backend.storage import Journal, database_recipes

    db = tmp_path / "db"
    db.mkdir()
    old = replace(Recipe(), occupation="lumo", version=2).to_dict()
    del old["occupation"]  # as recipe-2 shards stored it
    j = Journal(db, "qm9-000000-000999")
    j.set_info(recipe=old)
    j.close()
    assert database_recipes(db) == [old]
    with pytest.raises(ValueError, match="another recipe.*version 2"):
        build_database([], db, Recipe(), progress=False)
    # the old recipe, given back, continues the same database
    stats = build_database([], db, Recipe.from_dict(old), progress=False)
    assert stats["computed"] == 0


def test_merge_renumbers_clashing_parts_and_skips_repeats(tmp_path, tiny_db):
    from napari_corefit.backend.storage import (database_recipes, merge_databases,
                                                read_records, write_shard)

    # two machines built different molecules of one shard: both wrote <key>.p000.h5
    records = [r for part in sorted(Path(tiny_db).glob("*.h5")) for r in read_records(part)]
    assert len(records) >= 2
    key = "mixed"
    recipe = database_recipes(tiny_db)[0]
    a, b = tmp_path / "a", tmp_path / "b"
    for d, recs in ((a, records[:1]), (b, records[1:])):
        d.mkdir()
        assert write_shard(d, key, recs, recipe).name == f"{key}.p000.h5"
    out = tmp_path / "out"
    written = merge_databases([a, b], out)
    assert sorted(p.name for p in written) == [f"{key}.p000.h5", f"{key}.p001.h5"]
    assert finished_keys(out) == {k for k, _ in records}
    assert merge_databases([a, b], out) == []  # same bytes already there: nothing added
    table = load_database(out)
    assert len(table.molecules["key"]) == len(records)


def test_merge_refuses_another_recipe(tmp_path, tiny_db):
    from napari_corefit.backend.storage import (database_recipes, merge_databases,
                                                read_records, write_shard)

    part = sorted(Path(tiny_db).glob("*.h5"))[0]
    recipe = dict(database_recipes(tiny_db)[0], conv_tol=1e-3)
    other = tmp_path / "other"
    other.mkdir()
    write_shard(other, part.name.split(".p")[0], read_records(part)[:1], recipe)
    with pytest.raises(ValueError, match="another recipe"):
        merge_databases([other], tiny_db)


def test_deadline_stops_queued_molecules_and_a_rerun_finishes(tmp_path):
    from napari_corefit.backend.runner import build_database

    mols = [Molecule.from_smiles(s) for s in SMILES]
    db = tmp_path / "db"
    # two workers hold three molecules at once (two running, one queued: every molecule given
    # to the pool runs, so it gets no more); past the deadline no new one is started (before
    # 2026-11-26 four were handed out, and on 16 cores 16 molecules ran past the deadline)
    first = build_database(mols, db, workers=2, threads=1, deadline=0.2, progress=False,
                           flush_at_end=True)
    assert 1 <= first["computed"] <= 3
    assert len(finished_keys(db)) == first["computed"]
    second = build_database(mols, db, workers=2, threads=1, progress=False)
    assert second["skipped"] == first["computed"]
    assert len(finished_keys(db)) == len(SMILES)
