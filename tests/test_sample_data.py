"""Synthetic sample generator, shipped sample files and ``corefit sample make``."""

import numpy as np
import pandas as pd
import pytest

from napari_corefit.backend.curves import absolute_site_spectra, site_dos
from napari_corefit.sample_data import (load_sample, napari_sample, napari_sample_small,
                                        read_truth, sample_path, truth_from_signal,
                                        write_sample)
from napari_corefit.sample_data.generate import (SampleSettings, arrange_molecules,
                                                 carbon_site_rows, make_sample,
                                                 project_to_plane)
from napari_corefit.spectra.grids import EnergyGrid

SMALL = dict(size=64, dose=1e4)


@pytest.fixture(scope="module")
def sample(tiny_table):
    return make_sample(tiny_table, SampleSettings(**SMALL), seed=3, db_path="tiny")


def test_projection_keeps_a_planar_molecule(tiny_table):
    m = [str(s) for s in tiny_table.molecules["smiles"]].index("C=C")
    _, xyz = tiny_table.molecule_atoms(m)
    p = project_to_plane(xyz)

    def dists(a):
        return np.linalg.norm(a[:, None] - a[None, :], axis=-1)

    np.testing.assert_allclose(dists(p), dists(np.asarray(xyz)), atol=1e-6)


def test_molecules_with_overlapping_projected_atoms_are_left_out(tiny_table):
    from napari_corefit.sample_data.generate import usable_molecules

    smiles = np.array([str(s) for s in tiny_table.molecules["smiles"]])
    assert len(usable_molecules(tiny_table)) == len(smiles)
    # heavy atoms 0.116 nm apart (C#N) count as overlapping at 0.12 nm; C-C (0.15 nm) does not
    kept = set(smiles[usable_molecules(tiny_table, min_projected_nm=0.12)])
    assert "C#N" not in kept and "CC#N" not in kept and "CC" in kept and "C" in kept


def test_every_carbon_uses_its_symmetry_class_record(tiny_table):
    rows = carbon_site_rows(tiny_table)
    ethane = [str(s) for s in tiny_table.molecules["smiles"]].index("CC")
    # ethane: one computed site stands for both carbons
    assert rows[(ethane, 0)] == rows[(ethane, 1)]
    atoms = arrange_molecules(tiny_table, SampleSettings(size=112), np.random.default_rng(0))
    c = atoms["symbol"] == "C"
    assert (atoms["site"][c] >= 0).all() and (atoms["site"][~c] == -1).all()
    for r, m, a in zip(atoms["site"][c], atoms["molecule"][c], atoms["atom_index"][c]):
        assert tiny_table.sites["molecule"][r] == m and a in tiny_table.sites["equivalent"][r]
    # real molecules: N, O, F and H are there too, and molecules never overlap
    assert {"C", "N", "O", "F", "H"} <= set(atoms["symbol"])
    heavy = np.c_[atoms["y_nm"], atoms["x_nm"]][atoms["z"] > 1]
    copy = atoms["copy"][atoms["z"] > 1]
    d = np.linalg.norm(heavy[:, None] - heavy[None], axis=-1)
    assert d[copy[:, None] != copy[None, :]].min() >= 0.3


def test_truth_is_the_database_record(sample, tiny_table):
    si, _ = sample
    t = truth_from_signal(si)
    e = si.axes_manager.signal_axes[0].axis
    sites = t["site"][t["carbon"]]
    ref = absolute_site_spectra(tiny_table, e)[sites]
    ref /= ref.sum(1, keepdims=True) * (e[1] - e[0])
    np.testing.assert_allclose(t["spectra"], ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(t["dos"], site_dos(tiny_table)[sites], rtol=1e-4, atol=1e-6)
    assert t["symbol"].size == t["z"].size == t["molecule_key"].size
    assert (t["symbol"][t["carbon"]] == "C").all()


def test_counts_follow_dose_probe_and_background(tiny_table):
    st = SampleSettings(size=64, dose=4e4, signal_to_background=2.0)
    si, adf = make_sample(tiny_table, st, seed=5)
    t = truth_from_signal(si)
    counts = np.asarray(si.data, np.float64)
    e = si.axes_manager.signal_axes[0].axis
    bg_per_pixel = t["sample"]["background_counts_per_pixel_284_300"]
    # background far from the edge: pre-edge counts of the whole scan, against the power law
    pre = (e >= 250) & (e < 280)
    shape = (e / 285.0) ** -3.0
    near = (e >= 284) & (e < 300)
    expected_pre = bg_per_pixel * shape[pre].sum() / shape[near].sum() * counts[..., 0].size
    assert counts[..., pre].sum() == pytest.approx(expected_pre, rel=0.01)
    # edge counts: dose per carbon (probe weights sum to 1), minus what falls off the scan
    edge = counts.sum() - bg_per_pixel * shape.sum() / shape[near].sum() * counts[..., 0].size
    assert edge == pytest.approx(st.dose * t["carbon"].size, rel=0.03)
    # the ADF's brightest atoms are the heaviest: contrast Z^1.7 (F > O > N > C >> H)
    img = np.asarray(adf.data)
    yx = np.rint(np.c_[t["y_px"], t["x_px"]]).astype(int)
    at = img[yx[:, 0], yx[:, 1]]
    assert np.median(at[t["z"] == 6]) > 10 * max(np.median(img), 1.0)
    if (t["z"] == 1).any():
        assert np.median(at[t["z"] == 1]) < 0.5 * np.median(at[t["z"] == 6])


def test_summed_spectrum_near_a_carbon_is_its_site_spectrum(tiny_table):
    """Per-atom spectra carry the site's fine structure (not an average over the sample)."""
    st = SampleSettings(size=64, dose=2e6)
    si, _ = make_sample(tiny_table, st, seed=2)
    t = truth_from_signal(si)
    e = si.axes_manager.signal_axes[0].axis
    counts = np.asarray(si.data, np.float64)
    yy, xx = np.mgrid[:st.size, :st.size]
    bg = counts[..., (e >= 260) & (e < 280)].mean()
    sims = []
    for k, a in enumerate(t["carbon"]):
        disk = np.hypot(yy - t["y_px"][a], xx - t["x_px"][a]) < 1.5
        s = counts[disk].sum(0)
        s = s - np.median(s[(e >= 270) & (e < 280)])
        sims.append([np.dot(s, t["spectra"][j]) / np.linalg.norm(s)
                     / np.linalg.norm(t["spectra"][j]) for j in range(len(t["carbon"]))])
    sims = np.array(sims)
    assert bg > 0
    # each carbon's summed counts match its own site spectrum best (or an identical one)
    best = sims.argmax(1)
    own = np.arange(len(sims))
    same_site = t["site"][t["carbon"]][best] == t["site"][t["carbon"]][own]
    assert same_site.mean() >= 0.8
    assert np.median(sims[own, own]) > 0.95


def test_seed_decides_everything(tiny_table):
    st = SampleSettings(size=40, dose=1e3)
    a, _ = make_sample(tiny_table, st, seed=11)
    b, _ = make_sample(tiny_table, st, seed=11)
    c, _ = make_sample(tiny_table, st, seed=12)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)


def test_instrument_resolution_keeps_the_total_width(tiny_table):
    e = EnergyGrid(250.0, 0.05, 1600)
    sharp, _ = make_sample(tiny_table, SampleSettings(size=40, energy=e), seed=1)
    res, _ = make_sample(tiny_table, SampleSettings(size=40, energy=e, resolution_fwhm=0.8),
                         seed=1)
    a, b = truth_from_signal(sharp)["spectra"], truth_from_signal(res)["spectra"]
    assert np.abs(a - b).max() < 0.02 * a.max()
    with pytest.raises(ValueError, match="wider"):
        SampleSettings(resolution_fwhm=1.3)


def test_file_round_trip_pairs_the_adf(sample, tmp_path):
    from napari_corefit.io import load_spectrum_image

    si, adf = sample
    path = write_sample(tmp_path / "s.hspy", si, adf)
    loaded = load_spectrum_image(path)
    assert loaded.adf is not None and loaded.adf.metadata.General.title == "ADF"
    np.testing.assert_array_equal(loaded.image, adf.data)
    nav = loaded.signal.axes_manager.navigation_axes
    assert [a.units for a in nav] == ["nm", "nm"] and nav[0].scale == pytest.approx(0.02)
    assert loaded.signal.axes_manager.signal_axes[0].units == "eV"
    t, t0 = read_truth(path), truth_from_signal(si)
    np.testing.assert_array_equal(t["dos"], t0["dos"])
    np.testing.assert_array_equal(t["symbol"], t0["symbol"])
    assert t["sample"]["database"]["path"] == "tiny"
    assert not list(tmp_path.glob(".*tmp*"))
    csv = pd.read_csv(tmp_path / "s_truth.csv")
    assert len(csv) == t["z"].size and (csv["element"][t["carbon"]] == "C").all()
    np.testing.assert_allclose(csv["x_nm"], t["x_nm"])


def test_shipped_samples():
    for name in ("corefit_sample", "corefit_sample_small"):
        p = sample_path(name)
        assert p.stat().st_size <= 5e6
        t = read_truth(p)
        assert t["carbon"].size >= 4 and t["sample"]["database"]["n_sites"] > 0
    si = load_sample()
    assert si.adf is not None and si.signal.data.shape[-1] == 400
    with pytest.raises(FileNotFoundError, match="corefit sample make"):
        sample_path("nope")


def test_napari_sample_layers():
    from napari.layers import Layer

    layers = napari_sample()
    made = [Layer.create(*layer) for layer in layers]
    assert made[-1].scale[0] == pytest.approx(0.02)
    kinds = [layer[2] for layer in layers]
    assert kinds.count("image") >= 2 and kinds[-1] == "points"
    pts = layers[-1][0]
    t = read_truth(sample_path())
    assert len(pts) == int((t["z"] > 1).sum())
    small = napari_sample_small()
    assert len(small[-1][0]) == int((read_truth(sample_path("corefit_sample_small"))["z"] > 1)
                                    .sum())


def test_cli_make(tiny_db, tmp_path, capsys):
    from napari_corefit.cli import main

    out = tmp_path / "cli.hspy"
    rc = main(["sample", "make", "--db", str(tiny_db), "--seed", "4", "-o", str(out),
               "--size", "40", "--dose", "500", "--molecules", "C=C,CF"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    t = read_truth(out)
    assert set(t["smiles"]) <= {"C=C", "CF"} and t["sample"]["settings"]["dose"] == 500
    assert main(["sample", "make", "--db", str(tiny_db), "-o", str(tmp_path / "x.npz")]) == 2
    assert main(["sample", "make", "--db", str(tiny_db), "-o", str(out),
                 "--molecules", "C1=CC=CC=C1"]) == 2
