"""The whole chain on a synthetic sample: file -> preprocessing -> atoms -> model -> per-atom DOS.

The model here is a tiny ensemble trained in the test on the tiny database (the same molecules
the sample is built from, minus its random test split), so the DOS thresholds are modest ones
that it meets with margin. Measured on this sample (training seeds 0, 1, 2): median cosine
occupied 0.84, 0.75, 0.99, unoccupied 0.86, 0.83, 0.99; own-minus-other summed cosine 0.41, 0.20,
1.1; atom recall and precision 1.0. The bundled model's figures are in
benchmarks/results_end_to_end.md.
"""

import numpy as np
import pytest

from napari_corefit import engine
from napari_corefit.sample_data import read_truth, sample_path, write_sample
from napari_corefit.sample_data.generate import SampleSettings, make_sample
from napari_corefit.sample_data.score import cosine, score_result

#: the atom finder cannot estimate the column separation of isolated molecules (it looks for
#: a lattice), so the chain is given it: 2 px = 0.04 nm, a third of the shortest bond
ATOMS = {"min_distance": 2}


@pytest.fixture(scope="module")
def model(tiny_db, tiny_table, tmp_path_factory):
    from napari_corefit.training.loop import TrainSettings
    from napari_corefit.training.train import train_model

    out = tmp_path_factory.mktemp("e2e") / "model"
    return train_model(tiny_db, out, n_members=2, table=tiny_table, progress=False,
                       settings=TrainSettings(epochs=300, lr=1e-3, batch_size=8, patience=300,
                                              device="cpu", threads=1))


def _run(table, model, tmp_path, dose, seed=0, size=96):
    si, adf = make_sample(table, SampleSettings(size=size, dose=dose), seed=seed)
    path = write_sample(tmp_path / f"sample_{dose:g}.hspy", si, adf)
    result = engine.predict(str(path), model, atoms=True, atom_options=ATOMS, device="cpu")
    truth = read_truth(path)
    return truth, result, score_result(truth, result)


@pytest.fixture(scope="module")
def run(tiny_table, model, tmp_path_factory):
    return _run(tiny_table, model, tmp_path_factory.mktemp("run"), dose=2e4)


def test_every_heavy_atom_is_found_once(run):
    truth, _, s = run
    assert s["n_true"] >= 15
    assert s["recall"] >= 0.95 and s["precision"] >= 0.95
    assert s["position_error_nm"] < 0.01  # a pixel is 0.02 nm


def test_per_atom_dos_recovers_the_truth(run):
    truth, result, s = run
    assert s["n_carbon_scored"] >= 0.9 * s["n_carbon"]
    # measured with this tiny model: 0.84 (occupied) and 0.86 (unoccupied), 0.75 / 0.83 with
    # another training seed
    assert s["median_cosine_occupied"] > 0.6
    assert s["median_cosine_unoccupied"] > 0.6
    # and it is each atom's own DOS that is recovered, not an average carbon: the prediction
    # is closer to its own site's truth than to the truth of carbons of other sites
    own, other = s["cosine_occupied"] + s["cosine_unoccupied"], []
    pairs = _carbon_pairs(truth, result)
    for k, f in pairs:
        sites = truth["site"][truth["carbon"]]
        others = np.flatnonzero(sites != sites[k])
        pred = result.atoms_mean[f]
        other.append(np.mean([cosine(pred[0], truth["dos"][j, 0])
                              + cosine(pred[1], truth["dos"][j, 1]) for j in others]))
    assert np.median(own) > np.median(other) + 0.1


def _carbon_pairs(truth, result):
    from napari_corefit.sample_data.score import match_atoms

    table = result.atoms_table
    carbon_yx = np.c_[truth["y_nm"], truth["x_nm"]][truth["carbon"]]
    pairs = match_atoms(carbon_yx, np.c_[table["y_nm"], table["x_nm"]], 0.05)
    return [(k, f) for k, f in pairs if table["usable"].iloc[f]]


def test_dose_sets_the_edge_counts_and_low_dose_degrades(tiny_table, model, run, tmp_path):
    _, _, high = run
    _, _, low = _run(tiny_table, model, tmp_path, dose=300)
    # the engine measures N of an atom column at about 0.8 of the atom's dose (the input window
    # holds most of the edge; the rest of the probe tail goes to neighbours' cells)
    assert high["edge_counts_median"] == pytest.approx(0.8 * 2e4, rel=0.2)
    assert 0.4 * 300 < low["edge_counts_median"] < 300
    # the ADF finds the same atoms whatever the spectrum dose
    assert low["recall"] >= 0.95 and low["precision"] >= 0.95
    both = np.r_[low["cosine_occupied"], low["cosine_unoccupied"]]
    both_high = np.r_[high["cosine_occupied"], high["cosine_unoccupied"]]
    assert np.median(both) < np.median(both_high)


def test_predict_cli_on_the_shipped_small_sample(model, tmp_path):
    import pandas as pd

    from napari_corefit.cli import main

    out = tmp_path / "res.hspy"
    rc = main(["predict", str(sample_path("corefit_sample_small")), "--atoms", "--min-distance",
               "2", "--model", str(model.directory), "-o", str(out), "-q"])
    assert rc == 0
    table = pd.read_csv(tmp_path / "res_atoms.csv")
    truth = read_truth(sample_path("corefit_sample_small"))
    assert len(table) == int((truth["z"] > 1).sum())
