"""C 1s ionisation energies (Delta-SCF, the database pass) and spectra with a continuum."""

from __future__ import annotations

import shutil
import warnings

import h5py
import numpy as np
import pytest

from napari_corefit.backend.curves import (CONTINUUM, DISCRETE, Continuum, absolute_site_spectra,
                                           molecule_spectra, site_spectra)
from napari_corefit.backend.storage import SiteTable
from napari_corefit.spectra.grids import BROADENING_EV


def _one_site_table(sticks_rel, weights, e_exc=285.0, ip=290.0):
    """A one-site table with the given sticks (eV above E_exc) and IP."""
    n = len(sticks_rel)
    sites = {"excitation_energy": np.array([e_exc], np.float32),
             "ionisation_energy": np.array([ip], np.float32),
             "molecule": np.array([0]), "multiplicity": np.array([1]),
             "ok": np.array([True])}
    sticks = {"spec_offsets": np.array([0, n]), "spec_energy": np.asarray(sticks_rel, np.float32),
              "spec_intensity": np.asarray(weights, np.float32),
              "dos_offsets": np.array([0, 0]), "dos_energy": np.zeros(0, np.float32),
              "dos_s": np.zeros(0, np.float32), "dos_p": np.zeros(0, np.float32),
              "dos_occ": np.zeros(0, np.uint8)}
    return SiteTable({"key": np.array(["m"], object)}, sites, sticks, {}, [])


E = np.arange(275.0, 330.0, 0.02)


def test_the_step_sits_at_the_ip_with_its_height_relative_to_the_bound_peak():
    t = _one_site_table([0.0], [1.0], e_exc=285.0, ip=290.0)
    c = Continuum(step_height=0.3, step_width_ev=0.5, damping=1.0)
    y = absolute_site_spectra(t, E, continuum=c)[0]
    peak = 1.0 / (BROADENING_EV * np.sqrt(2 * np.pi))  # the bound line's height
    # half the step at the IP, the whole step well above it, nothing well below
    assert y[np.argmin(abs(E - 290.0))] == pytest.approx(0.5 * 0.3 * peak, rel=1e-3)
    assert y[np.argmin(abs(E - 300.0))] == pytest.approx(0.3 * peak, rel=1e-6)
    assert y[np.argmin(abs(E - 280.0))] < 1e-6 * peak
    # the bound line itself is untouched by the step (its tail adds < 0.1 %)
    discrete = absolute_site_spectra(t, E, continuum=DISCRETE)[0]
    assert y[np.argmin(abs(E - 285.0))] == pytest.approx(discrete[np.argmin(abs(E - 285.0))],
                                                         rel=1e-3)


def test_lines_above_the_ip_broaden_with_energy_and_keep_their_area():
    # a bound line, one just above the IP and one far above it
    t = _one_site_table([0.0, 6.0, 20.0], [1.0, 1.0, 1.0], e_exc=285.0, ip=290.0)
    c = Continuum(step_height=0.0, sigma_max_ev=3.0, ramp_ev=10.0, onset_ev=0.0, damping=1.0)
    y = absolute_site_spectra(t, E, continuum=c)[0]

    def width(centre, half=3.0):
        m = abs(E - centre) < half
        w = y[m] / y[m].sum()
        mu = (E[m] * w).sum()
        return np.sqrt((w * (E[m] - mu) ** 2).sum()), y[m].sum() * 0.02

    s_bound, a_bound = width(285.0)
    s_near, _ = width(291.0)  # 1 eV above the IP: 10 % of the ramp
    assert s_bound == pytest.approx(BROADENING_EV, rel=0.02)
    assert s_near == pytest.approx(np.sqrt(BROADENING_EV ** 2 + 0.01 * (9.0 - BROADENING_EV ** 2)),
                                   rel=0.05)
    far = abs(E - 305.0) < 10.0
    sig_far = np.sqrt((y[far] * (E[far] - 305.0) ** 2).sum() / y[far].sum())
    assert sig_far == pytest.approx(3.0, rel=0.05)  # the ramp's end: sigma_max
    # every line keeps its area (oscillator strength) whatever its width
    assert a_bound == pytest.approx(1.0, rel=1e-3)
    assert y[(E > 296) & (E < 320)].sum() * 0.02 == pytest.approx(1.0, rel=0.01)
    # damping scales only the lines above the IP
    damped = absolute_site_spectra(t, E, continuum=Continuum(step_height=0.0, damping=0.5,
                                                             sigma_max_ev=3.0, ramp_ev=10.0))[0]
    assert damped[(E > 296) & (E < 320)].sum() * 0.02 == pytest.approx(0.5, rel=0.01)
    assert damped[abs(E - 285) < 2].sum() == pytest.approx(y[abs(E - 285) < 2].sum(), rel=1e-3)


def test_realistic_spectra_are_the_default_and_keep_the_first_peak(tiny_table):
    ok = tiny_table.ok()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny database has no IPs: the fallback threshold
        x_cont, p_cont = site_spectra(ok, return_peaks=True)
        x_disc, p_disc = site_spectra(ok, continuum=DISCRETE, return_peaks=True)
        x_default = site_spectra(ok)
    np.testing.assert_array_equal(x_default, x_cont)
    # the engine's detector finds the same first peak on both: the continuum's broad tails tilt
    # the background under it and move its maximum by 0.12 eV at most here (0.5 eV broadening)
    assert np.abs(p_cont - p_disc).max() < 0.15
    assert np.median(np.abs(p_cont - p_disc)) < 0.05
    assert not np.allclose(x_cont, x_disc)
    # the continuum raises the high-energy end (the step) relative to the discrete lines' gaps
    assert (x_cont[:, -20:].min(axis=1) > x_disc[:, -20:].min(axis=1)).mean() > 0.8


def test_a_database_without_ionisation_energies_says_so(tiny_table):
    assert np.isnan(tiny_table.sites["ionisation_energy"]).all()
    with pytest.warns(UserWarning, match="have no ionisation energy.*corefit db ionise"):
        molecule_spectra(tiny_table.ok())


@pytest.mark.slow
def test_delta_scf_ionisation_energy_of_methane_and_co():
    from napari_corefit.backend import Molecule, Recipe
    from napari_corefit.backend.ionisation import compute_ionisation

    # gas-phase XPS: CH4 290.8 eV, CO 296.2 eV
    for smiles, xps, tol in (("C", 290.8, 0.3), ("[C-]#[O+]", 296.2, 0.5)):
        m = Molecule.from_smiles(smiles, optimise="mmff")
        r = compute_ionisation(m, 0, Recipe())
        assert r.status == "ok", r.status
        assert abs(r.ionisation_energy - xps) < tol, (smiles, r.ionisation_energy)
        assert r.hole_population > 0.9


@pytest.mark.slow
def test_the_ionisation_pass_is_resumable_and_touches_nothing_else(tiny_db, tmp_path):
    from napari_corefit.backend import ionisation_store as store
    from napari_corefit.backend.storage import load_database

    db = tmp_path / "db"
    shutil.copytree(tiny_db, db)
    before = {p.name: p.read_bytes() for p in db.glob("*.h5")}
    old = load_database(db)
    first = store.run_dscf_pass(db, limit=2, max_atoms=3)  # CH4? no: 5 atoms; HCN is 3
    assert first == 1  # HCN is the only molecule of <= 3 atoms
    store.flush_journal(db)
    assert store.run_dscf_pass(db, limit=2, max_atoms=3) == 0  # nothing left to do there
    more = store.run_dscf_pass(db, limit=2, max_atoms=5)  # methane, C2H2 ...
    assert more == 2
    # a pass stopped before its flush keeps its sites in the journal: they load and count
    new = load_database(db)
    assert {p.name: p.read_bytes() for p in db.glob("*.h5")} == before  # shards untouched
    have = np.isfinite(new.sites["ionisation_energy"])
    assert have.sum() == 3
    assert set(new.sites["ionisation_method"][have]) == {"dscf"}
    assert (new.sites["ionisation_energy"][have] > 289).all()
    assert (new.sites["ionisation_energy"][have] < 300).all()
    for k, v in old.sites.items():
        if k in ("ionisation_energy", "ionisation_method", "equivalent"):
            continue
        assert np.array_equal(v, new.sites[k]), k
    store.flush_journal(db)
    parts = sorted((db / "ionisation").glob("part-*.h5"))
    assert len(parts) == 2
    again = load_database(db)
    np.testing.assert_array_equal(again.sites["ionisation_energy"], new.sites["ionisation_energy"])
    # estimates for every site do not stop the pass, and a Delta-SCF value wins over them
    table = load_database(db)
    x = store.estimate_features(table)
    store.write_estimates(db, table, np.r_[290.0, np.zeros(x.shape[1] - 1)], np.zeros(3))
    mixed = load_database(db)
    assert (mixed.sites["ionisation_method"] == "dscf").sum() == 3
    assert (mixed.sites["ionisation_method"] == "estimate").sum() == table.n_sites - 3
    np.testing.assert_array_equal(mixed.sites["ionisation_energy"][have],
                                  new.sites["ionisation_energy"][have])
    assert store.run_dscf_pass(db, limit=1, max_atoms=5) == 1
    assert len(list((db / "ionisation").glob("part-*.h5"))) == 3
    # a refitted estimator replaces the earlier estimates' part; Delta-SCF parts stay
    store.write_estimates(db, table, np.r_[291.0, np.zeros(x.shape[1] - 1)], np.zeros(3))
    assert len(list((db / "ionisation").glob("part-*.h5"))) == 3
    last = load_database(db)
    assert (last.sites["ionisation_energy"][last.sites["ionisation_method"] == "estimate"]
            == 291.0).all()
    with h5py.File(parts[0], "r") as f:
        assert f["ip"].dtype == np.float32 and f["ip"].shape == (1,)


def test_continuum_defaults_are_recorded():
    assert isinstance(CONTINUUM, Continuum)
    d = CONTINUUM.as_dict()
    assert set(d) >= {"step_height", "step_width_ev", "sigma_max_ev", "ramp_ev", "onset_ev",
                      "damping"}


def test_the_engine_gives_back_the_realistic_training_inputs_from_a_sample(tiny_table):
    """Generator, training curves and engine agree on the realistic recipe: a noise-free sample
    spectrum of each site, on a power-law background, preprocessed by the engine, is that
    site's training input (same first peak, same curve)."""
    from napari_corefit.sample_data.generate import SampleSettings, site_spectra_on_axis
    from napari_corefit.spectra.pipeline import preprocess
    from napari_corefit.training.dataset import build_curves, default_preprocess_config

    ok = tiny_table.select(tiny_table.sites["ok"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no IPs in the tiny database: the stated fallback
        rows = build_curves(ok, level="site")
        settings = SampleSettings()
        spec = site_spectra_on_axis(ok, np.arange(ok.n_sites), settings)
        _, rel_peak = site_spectra(ok, return_peaks=True)
    assert settings.to_dict()["continuum"] == CONTINUUM.as_dict()  # recorded in the file
    e = settings.energy.values
    counts = spec * 1e6 + 1e4 * (e / 284.0) ** -3.0
    res = preprocess(e, counts.astype(np.float32), default_preprocess_config())
    assert (res.reason == 0).all()
    peaks = rel_peak + ok.sites["excitation_energy"]
    assert np.abs(res.peak_energy - peaks).max() < 0.02
    x, ref = np.asarray(res.spectra, np.float64), rows.clean.astype(np.float64)
    cos = (x * ref).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() > 0.999
