"""Training and evaluation on a tiny database computed by the real backend (``tiny_db``)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_corefit.cli import main as corefit
from napari_corefit.model import load_model, save_model
from napari_corefit.model.network import default_arch
from napari_corefit.spectra.grids import DOS_GRID, SPECTRUM_GRID
from napari_corefit.training.dataset import build_curves, make_inputs
from napari_corefit.training.loop import TrainSettings, train_ensemble, train_member
from napari_corefit.training.noise import NoiseModel
from napari_corefit.training.splits import random_split


@pytest.fixture(scope="module")
def rows(tiny_table):
    return build_curves(tiny_table, level="site", noise_axis=NoiseModel().axis)


def test_site_rows_are_normalised_curves_of_every_ok_site(tiny_table, rows):
    assert len(rows) == int(tiny_table.sites["ok"].sum())
    assert rows.clean.shape == (len(rows), SPECTRUM_GRID.n)
    assert rows.targets.shape == (len(rows), 2, DOS_GRID.n)
    np.testing.assert_allclose(rows.clean.sum(-1) * SPECTRUM_GRID.step, 1.0, rtol=1e-5)
    np.testing.assert_allclose(rows.targets.sum(-1) * DOS_GRID.step, 1.0, rtol=1e-5)
    # the inputs start 1 eV below the first peak: the peak sits at index 10 (0 eV)
    at_peak = rows.clean[:, 9:12].max(-1)
    assert np.all(rows.clean[:, :5].max(-1) < at_peak)
    # the first peak reaches the detector's 30 % of the maximum inside the engine's search window
    # (282-300 eV); a stronger peak past 300 eV does not count (0.09 of the input's maximum for
    # one tiny-database site)
    e = NoiseModel().axis.values
    window = (e >= 282) & (e <= 300)
    at_abs_peak = np.array([np.interp(p, e, a) for p, a in zip(rows.peak, rows.absolute)])
    assert np.all(at_abs_peak >= 0.28 * rows.absolute[:, window].max(-1))
    # absolute spectra: nothing below each site's own E_exc (its first transition, maybe dark)
    # but the Gaussian tails of the continuum's resonances, several eV wide (< 1 % of the maximum)
    below = e[None, :] < rows.reference[:, None] - 2.0
    assert np.all(np.where(below, rows.absolute, 0).max(-1) < 1e-2 * rows.absolute.max(-1))
    assert np.all(np.where(~below, rows.absolute, 0).max(-1) == rows.absolute.max(-1))


def test_molecule_rows_are_multiplicity_weighted(tiny_table):
    mol = build_curves(tiny_table, level="molecule")
    assert len(mol) == tiny_table.n_molecules  # every tiny molecule has all its sites
    site = build_curves(tiny_table, level="site")
    # a molecule with one carbon site is its site
    counts = np.bincount(site.molecule, minlength=tiny_table.n_molecules)
    one = np.flatnonzero(counts == 1)
    assert one.size >= 5
    for m in one:
        i, j = np.flatnonzero(site.molecule == m)[0], np.flatnonzero(mol.molecule == m)[0]
        np.testing.assert_allclose(mol.targets[j], site.targets[i], atol=1e-5)
        np.testing.assert_allclose(mol.clean[j], site.clean[i], atol=2e-3)


def test_a_site_gets_the_same_rows_whichever_sites_are_broadened_with_it(tiny_table, rows):
    from napari_corefit.backend import curves

    # evaluation broadens only a split's molecules, and site_spectra works in chunks: neither
    # may change a site's input (the fine axis is a fixed lattice, not one per chunk)
    ok = tiny_table.select(np.asarray(tiny_table.sites["ok"], bool))

    def same(a, b, **kw):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, **kw)

    same(curves.site_spectra(ok, chunk=3), curves.site_spectra(ok))
    # a search window above every E_exc - 4 eV: the broadening axis then starts at each chunk's
    # lowest E_exc, as it does for real databases whose first transitions lie below 284 eV
    window = (float(ok.sites["excitation_energy"].max()) + 1.0,) * 2
    window = (window[0], window[0] + 10.0)
    same(curves.site_spectra(ok, chunk=3, peak_search_ev=window),
         curves.site_spectra(ok, peak_search_ev=window))
    some = np.unique(rows.molecule)[1::3]
    sub = build_curves(tiny_table, level="site", noise_axis=NoiseModel().axis, molecules=some)
    ref = rows.in_molecules(some)
    np.testing.assert_array_equal(sub.row_id, ref.row_id)
    for name in ("clean", "targets", "absolute", "peak", "reference", "weight"):
        same(getattr(sub, name), getattr(ref, name), err_msg=name)
    empty = build_curves(tiny_table, molecules=[], allow_empty=True)
    assert len(empty) == 0 and empty.clean.shape == (0, SPECTRUM_GRID.n)
    with pytest.raises(ValueError, match="none of the given molecules"):
        build_curves(tiny_table, molecules=[])


def test_split_never_shares_a_molecule_between_parts(tiny_table, rows):
    s = random_split(tiny_table.molecules["key"], seed=1, fractions=(0.5, 0.25, 0.25))
    parts = [rows.in_molecules(getattr(s, p)) for p in ("train", "val", "test")]
    assert sum(map(len, parts)) == len(rows)
    mols = [set(p.molecule) for p in parts]
    assert not (mols[0] & mols[1] or mols[0] & mols[2] or mols[1] & mols[2])


def test_training_lowers_the_loss_and_round_trips_exactly(rows, tmp_path):
    arch = default_arch("paper_mlp")
    settings = TrainSettings(epochs=40, lr=1e-3, batch_size=8, patience=40, device="cpu")
    net, hist = train_member(arch, rows, rows, settings, seed=0, progress=False)
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    assert hist["best_val_loss"] < 0.5 * hist["val_loss"][0]
    ens, _ = train_ensemble(arch, rows, rows, TrainSettings(epochs=3, device="cpu"),
                            n_members=2, progress=False)
    save_model(tmp_path, ens, {"arch": arch, "input_grid": SPECTRUM_GRID,
                               "output_grid": DOS_GRID})
    x = torch.from_numpy(rows.clean)
    assert torch.equal(load_model(tmp_path).ensemble(x), ens(x))


def test_an_interrupted_ensemble_resumes_at_the_member_it_was_training(rows, tmp_path):
    arch = default_arch("paper_mlp")
    settings = TrainSettings(epochs=5, lr=1e-3, batch_size=8, device="cpu")
    d = tmp_path / "members"
    # "interrupted" after one member: only member 0 is on disk
    first, _ = train_ensemble(arch, rows, rows, settings, n_members=1, progress=False,
                              member_dir=d)
    assert sorted(p.suffix for p in d.iterdir()) == [".json", ".safetensors"]
    ens, hist = train_ensemble(arch, rows, rows, settings, n_members=2, progress=False,
                               member_dir=d)
    x = torch.from_numpy(rows.clean)
    assert torch.equal(ens.members[0](x), first.members[0](x))  # reused, not retrained
    assert not torch.equal(ens.members[1](x), ens.members[0](x))
    assert len(hist[0]["val_loss"]) == 5
    # the same member from scratch gives the same weights: resuming changes nothing
    fresh, _ = train_ensemble(arch, rows, rows, settings, n_members=2, progress=False)
    assert torch.equal(fresh.members[1](x), ens.members[1](x))
    # other settings (or rows) never reuse a saved member
    other, _ = train_ensemble(arch, rows, rows, TrainSettings(epochs=5, lr=2e-3, batch_size=8,
                                                              device="cpu"),
                              n_members=1, progress=False, member_dir=d)
    assert not torch.equal(other.members[0](x), first.members[0](x))
    half, _ = train_ensemble(arch, rows.in_molecules(np.unique(rows.molecule)[:2]), rows,
                             settings, n_members=1, progress=False, member_dir=d)
    assert not torch.equal(half.members[0](x), first.members[0](x))


def test_members_trained_apart_assemble_into_the_same_ensemble(rows, tmp_path):
    from napari_corefit.training.loop import _member_key, _member_name

    arch = default_arch("paper_mlp")
    settings = TrainSettings(epochs=5, lr=1e-3, batch_size=8, device="cpu")
    d = tmp_path / "members"
    # members 1 and 0 trained by separate calls (separate processes in a study), in any order
    assert train_ensemble(arch, rows, rows, settings, n_members=2, progress=False,
                          member_dir=d, only=[1]) == (None, None)
    assert len(list(d.glob("*.json"))) == 1
    train_ensemble(arch, rows, rows, settings, n_members=2, progress=False, member_dir=d,
                   only=[0])
    assembled, hist = train_ensemble(arch, rows, rows, settings, n_members=2, progress=False,
                                     member_dir=d)
    together, _ = train_ensemble(arch, rows, rows, settings, n_members=2, progress=False)
    x = torch.from_numpy(rows.clean)
    for a, b in zip(assembled.members, together.members):
        assert torch.equal(a(x), b(x))
    assert [len(h["val_loss"]) for h in hist] == [5, 5]
    with pytest.raises(ValueError, match="outside"):
        train_ensemble(arch, rows, rows, settings, n_members=2, member_dir=d, only=[2])
    with pytest.raises(ValueError, match="member_dir"):
        train_ensemble(arch, rows, rows, settings, n_members=2, only=[0])
    # where it ran is not what it was trained from: a GPU member serves a CPU run
    names = {_member_name(_member_key(arch, rows, rows, TrainSettings(device=dev, threads=t),
                                      0, None, None)) for dev, t in (("cpu", 1), ("cuda", None))}
    assert len(names) == 1


def test_plateau_schedule_and_cosine_loss_options(rows):
    from napari_corefit.training.loop import _loss

    y = torch.from_numpy(rows.targets[:4])
    assert float(_loss(y, y, cosine_weight=1.0)) == pytest.approx(0.0, abs=1e-6)
    shifted = torch.roll(y, 5, dims=-1)
    mse = float(_loss(shifted, y))
    assert float(_loss(shifted, y, cosine_weight=0.01)) > mse > 0
    # the rate halves whenever validation stalls, never below min_lr
    settings = TrainSettings(epochs=60, lr=1e-3, batch_size=8, patience=60, device="cpu",
                             lr_decay=0.5, lr_patience=0, min_lr=4e-4)
    _, hist = train_member(default_arch("paper_mlp"), rows, rows, settings, seed=0,
                           progress=False)
    assert hist["lr"][0] == 1e-3
    assert min(hist["lr"]) < 1e-3
    assert set(np.round(hist["lr"], 9)) <= {1e-3, 5e-4, 4e-4}


def test_cosine_schedule_runs_the_rate_down_over_the_epochs(rows):
    from napari_corefit.training.loop import _member_key, _member_name

    arch = default_arch("paper_mlp")
    settings = TrainSettings(epochs=20, lr=1e-3, batch_size=8, patience=20, device="cpu",
                             lr_schedule="cosine", min_lr=1e-5)
    _, hist = train_member(arch, rows, rows, settings, seed=0, progress=False)
    lr = np.asarray(hist["lr"])
    # epoch e trains at min_lr + (lr - min_lr) (1 + cos(pi e / epochs)) / 2
    expect = 1e-5 + (1e-3 - 1e-5) * (1 + np.cos(np.pi * np.arange(20) / 20)) / 2
    np.testing.assert_allclose(lr, expect, rtol=1e-6)
    assert hist["best_val_loss"] < 0.5 * hist["val_loss"][0]
    # off by default, and then not part of a member's key (members saved before it exist)
    assert "lr_schedule" not in TrainSettings().to_dict()
    keys = {_member_name(_member_key(arch, rows, rows, TrainSettings(lr_schedule=s), 0, None,
                                     None)) for s in ("constant", "cosine")}
    assert len(keys) == 2
    with pytest.raises(ValueError, match="lr_schedule"):
        train_member(arch, rows, rows, TrainSettings(epochs=1, lr_schedule="step"), seed=0,
                     progress=False)
    with pytest.raises(ValueError, match="exclude"):
        train_member(arch, rows, rows, TrainSettings(epochs=1, lr_schedule="cosine",
                                                     lr_decay=0.5), seed=0, progress=False)



def test_time_limit_counts_cpu_time_on_the_cpu(rows, monkeypatch):
    # a wall clock that races ahead (a machine busy with other work) does not stop a CPU member
    from napari_corefit.training import loop

    wall = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(loop.time, "perf_counter", lambda: float(next(wall)))
    settings = TrainSettings(epochs=5, lr=1e-3, batch_size=8, patience=5, device="cpu",
                             max_seconds=100.0)
    _, hist = train_member(default_arch("paper_mlp"), rows, rows, settings, seed=0,
                           progress=False)
    assert hist["stopped"] == "epochs" and hist["epochs_run"] == 5
    # while its own CPU time counts
    cpu = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(loop.time, "process_time", lambda: float(next(cpu)))
    _, hist = train_member(default_arch("paper_mlp"), rows, rows, settings, seed=0,
                           progress=False)
    assert hist["stopped"] == "time" and hist["epochs_run"] == 1


def test_bfloat16_training_learns_and_keeps_float32_weights(rows):
    arch = default_arch("paper_mlp")
    settings = TrainSettings(epochs=40, lr=1e-3, batch_size=8, patience=40, device="cpu",
                             precision="bfloat16")
    net, hist = train_member(arch, rows, rows, settings, seed=0, progress=False)
    assert hist["best_val_loss"] < 0.5 * hist["val_loss"][0]
    assert all(p.dtype == torch.float32 for p in net.parameters())
    # a different arithmetic is a different member: never reused for a float32 one
    from napari_corefit.training.loop import _member_key, _member_name

    key = {p: _member_name(_member_key(arch, rows, rows, TrainSettings(precision=p), 0, None,
                                       None)) for p in ("float32", "bfloat16")}
    assert key["float32"] != key["bfloat16"]
    with pytest.raises(ValueError, match="precision"):
        train_member(arch, rows, rows, TrainSettings(epochs=1, precision="float16"), seed=0,
                     progress=False)


def test_weight_average_is_what_is_validated_and_kept(rows):
    from napari_corefit.training.loop import _member_key, _member_name

    arch = default_arch("paper_mlp")
    kw = dict(epochs=30, lr=1e-3, batch_size=8, patience=30, device="cpu")
    plain, hist_plain = train_member(arch, rows, rows, TrainSettings(**kw), seed=0,
                                     progress=False)
    avg, hist = train_member(arch, rows, rows, TrainSettings(**kw, ema_decay=0.9), seed=0,
                             progress=False)
    assert hist["best_val_loss"] < 0.5 * hist["val_loss"][0]
    # the same steps, but the kept weights are the average, and its validation loss is the
    # one recorded for the kept epoch
    x = torch.from_numpy(rows.clean)
    assert not torch.equal(avg(x), plain(x))
    with torch.no_grad():
        kept = float(((avg(x).numpy() - rows.targets) ** 2).mean())
    assert kept == pytest.approx(hist["best_val_loss"], rel=1e-5)
    # the option is part of a member's key only when on: older members keep theirs
    name = _member_name(_member_key(arch, rows, rows, TrainSettings(), 0, None, None))
    assert "ema_decay" not in TrainSettings().to_dict()
    assert name != _member_name(_member_key(arch, rows, rows, TrainSettings(ema_decay=0.99),
                                            0, None, None))
    with pytest.raises(ValueError, match="ema_decay"):
        train_member(arch, rows, rows, TrainSettings(epochs=1, ema_decay=1.0), seed=0,
                     progress=False)


def test_engine_preprocessing_of_noise_free_spectra_reproduces_the_training_inputs(rows):
    # noise-free inputs come from backend.curves (fine grid); the engine aligns measured
    # spectra with its own pipeline: both must give the same model input
    from napari_corefit.spectra.pipeline import PreprocessConfig, preprocess

    res = preprocess(NoiseModel().axis.values, rows.absolute,
                     PreprocessConfig(background=False, min_edge_counts=0, min_edge_snr=None))
    assert res.mask.all()
    cos = (res.spectra * rows.clean).sum(-1) / np.linalg.norm(res.spectra, axis=-1) / \
        np.linalg.norm(rows.clean, axis=-1)
    assert cos.min() > 0.9999
    np.testing.assert_allclose(res.peak_energy, rows.peak)


def test_noisy_inputs_go_through_the_engine_and_converge_to_the_clean_ones(rows):
    rng = np.random.default_rng(0)
    cos = {}
    for n in (1e2, 1e6):
        x, ok = make_inputs(rows, NoiseModel(counts=n), rng=rng)
        assert x.shape == rows.clean.shape and x.dtype == np.float32
        c = (x * rows.clean).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(
            rows.clean, axis=-1)
        cos[n] = np.median(c[ok])
        assert ok.all()
    # at a million counts the engine's preprocessing reproduces the noise-free alignment
    assert cos[1e6] > 0.99
    assert cos[1e2] < cos[1e6]
    a, _ = make_inputs(rows, NoiseModel(counts=1e3), rng=np.random.default_rng(1))
    b, _ = make_inputs(rows, NoiseModel(counts=1e3), rng=np.random.default_rng(2))
    assert not np.array_equal(a, b)  # fresh noise per draw (per epoch in training)


def test_corefit_train_and_evaluate(tiny_db, tiny_table, tmp_path, capsys):
    out = tmp_path / "model"
    rc = corefit(["train", "--db", str(tiny_db), "--out", str(out), "--members", "2",
                  "--epochs", "5", "--patience", "5", "--lr", "1e-3", "--device", "cpu",
                  "--ema-decay", "0.9", "--quiet"])
    assert rc == 0
    m = load_model(out)
    cfg = m.config
    assert m.n_members == 2 and cfg["level"] == "site" and cfg["noise_counts"] is None
    assert cfg["training"]["ema_decay"] == 0.9
    assert cfg["recipe"]["functional"] == tiny_table.recipe["functional"]
    assert cfg["database"]["n_sites"] == tiny_table.n_sites
    assert len(cfg["database"]["sha256"]) == 64 and cfg["database"]["shards"]
    assert cfg["split"]["kind"] == "random" and cfg["preprocess"] is not None
    assert m.ood["components"].shape[1] == 160
    capsys.readouterr()
    rc = corefit(["evaluate", "--model", str(out), "--db", str(tiny_db), "--split", "all",
                  "--json"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    s = json.loads(lines[0])
    for key in ("n_sites", "n_molecules", "mse_occupied", "mse_unoccupied",
                "cosine_median_occupied", "cosine_median_unoccupied",
                "peak_within_0p5ev_fraction"):
        assert key in s
    assert s["n_sites"] == int(tiny_table.sites["ok"].sum())
    assert s["n_molecules"] == tiny_table.n_molecules
    assert 0 <= s["peak_within_0p5ev_fraction"] <= 1 and s["mse_occupied"] > 0
    # a model that does not exist is one clear error line, not a traceback
    assert corefit(["evaluate", "--model", str(tmp_path / "none"), "--db", str(tiny_db)]) == 2
    assert "config.json" in capsys.readouterr().err


def test_model_card_is_written_from_a_real_evaluation(tiny_db, tiny_table, tmp_path,
                                                       monkeypatch):
    from napari_corefit.training.evaluate import evaluate_model
    from napari_corefit.training.report import write_model_card
    from napari_corefit.training.train import train_model

    m = train_model(tiny_db, tmp_path / "m", n_members=2, table=tiny_table, progress=False,
                    settings=TrainSettings(epochs=3, device="cpu"))
    card = write_model_card(tiny_db, tmp_path / "m", tmp_path / "doc" / "MODEL_CARD.md",
                            tmp_path / "doc" / "images", beyond_db=tiny_db,
                            previous_model=tmp_path / "m")
    text = card.read_text()
    s = evaluate_model(m, tiny_table, split="test").summary
    assert f"| {s['n_sites']} | {s['n_molecules']} | {s['mse_occupied']:.4g} |" in text
    # the goal line: four decimals and a verdict (a tiny model is far from the goal)
    u = s["cosine_median_unoccupied"]
    line = text[text.index("≥ 0.97 unoccupied (measured"):]
    assert line.startswith(f"≥ 0.97 unoccupied (measured {u:.4f}, 95 % CI ")
    assert f": not met, short by {0.97 - u:.4f})" in line.splitlines()[0]
    # the interval brackets the measured median
    lo, hi = (float(x) for x in line.split("95 % CI ")[1].split(":")[0].split("–"))
    assert lo <= round(u, 4) <= hi
    assert "## Uncertainty (ensemble σ)" in text
    # by molecule size, the previous model (here the same one) scored on the same test sites
    size = text[text.index("## Test metrics by molecule size"):text.index("## Uncertainty")]
    cos = f"{s['cosine_median_occupied']:.3f} / {s['cosine_median_unoccupied']:.3f}"
    assert f"| all | {s['n_sites']} | {s['n_molecules']} | {cos} | {cos} |" in size
    assert f"previous model ({tiny_table.n_sites:,} sites)" in size
    # the out-of-domain section scores every usable site of the database it is given
    beyond = text[text.index("## Beyond the training domain"):]
    s_all = evaluate_model(m, tiny_table, split="all").summary
    assert f"| default model | {s_all['n_sites']} | {s_all['n_molecules']} |" in beyond
    for png in ("model_examples_site.png", "model_training_curves.png", "model_calibration.png"):
        assert (tmp_path / "doc" / "images" / png).stat().st_size > 10_000
    # the card's evaluations broaden a split's rows once (with the noise axis, which noise-free
    # evaluations reuse) and score exactly as fresh rows do
    from napari_corefit.training import evaluate as evaluate_module

    built = []
    real_build = evaluate_module.build_curves

    def counting_build(*args, **kwargs):
        built.append(kwargs.get("noise_axis"))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "build_curves", counting_build)
    noisy = NoiseModel(1e3)
    with evaluate_module.reuse_rows():
        a = evaluate_model(m, tiny_table, split="test", noise=noisy).summary
        b = evaluate_model(m, tiny_table, split="test").summary
        c = evaluate_model(m, tiny_table, split="test", noise=noisy).summary
        evaluate_model(m, tiny_table, split="all")
    assert built == [noisy.axis, None]
    fresh = evaluate_model(m, tiny_table, split="test", noise=noisy).summary
    assert len(built) == 3  # the cache ends with its block
    as_text = lambda d: json.dumps(d, sort_keys=True)  # noqa: E731  (NaN-safe equality)
    assert as_text(a) == as_text(c) == as_text(fresh) and as_text(b) == as_text(s)


def test_size_groups_pool_small_sizes_and_partition_the_rows():
    from napari_corefit.training.report import size_groups

    heavy = np.array([1, 3, 3, 5, 6, 6, 6, 7, 7, 7, 7, 8])
    groups = size_groups(heavy, min_sites=3)
    assert [lab for lab, _ in groups] == ["1–3", "5–6", "7–8"]
    masks = np.array([mk for _, mk in groups])
    assert (masks.sum(0) == 1).all()  # every row in exactly one group
    assert [lab for lab, _ in size_groups(heavy, min_sites=100)] == ["1–8"]


def test_card_names_noise_models_stopped_by_the_time_limit(tiny_db, tiny_table, tmp_path):
    from napari_corefit.training.report import _time_capped_note
    from napari_corefit.training.train import train_model

    fast = train_model(tiny_db, tmp_path / "a", n_members=1, table=tiny_table, progress=False,
                       settings=TrainSettings(epochs=2, device="cpu"))
    capped = train_model(tiny_db, tmp_path / "b", n_members=1, table=tiny_table,
                         progress=False,
                         settings=TrainSettings(epochs=50, device="cpu", max_seconds=0.0))
    assert capped.config["training"]["members"][0]["stopped"] == "time"
    assert _time_capped_note({None: fast}) == []
    note = " ".join(_time_capped_note({None: fast, 1000.0: capped}))
    assert "1e3 (after 1 epochs)" in note and "noise-free" not in note


def test_savitzky_golay_models_see_smoothed_inputs(tiny_db, rows, tmp_path, capsys):
    from napari_corefit.spectra.pipeline import PreprocessConfig

    smooth, ok = make_inputs(rows, None, PreprocessConfig(savgol_window_ev=1.5))
    clean = rows.clean
    assert ok.all() and smooth.shape == clean.shape
    diff = np.abs(smooth - clean).max(-1) / clean.max(-1)
    assert np.median(diff) > 0.02  # smoothing changed the peaks ...
    cos = (smooth * clean).sum(-1) / np.linalg.norm(smooth, axis=-1) / np.linalg.norm(clean,
                                                                                       axis=-1)
    assert cos.min() > 0.95  # ... but not the alignment
    out = tmp_path / "sg"
    assert corefit(["train", "--db", str(tiny_db), "--out", str(out), "--members", "1",
                    "--epochs", "2", "--savgol-ev", "1.5", "--quiet"]) == 0
    assert load_model(out).config["preprocess"]["savgol_window_ev"] == 1.5
    capsys.readouterr()
    assert corefit(["evaluate", "--model", str(out), "--db", str(tiny_db), "--split", "all",
                    "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_unusable"] == 0


def test_bundled_default_model_loads_and_predicts_real_spectra(rows):
    from napari_corefit.model import load_default

    m = load_default()
    assert m.input_grid == SPECTRUM_GRID and m.output_grid == DOS_GRID
    assert m.n_members >= 5 and m.config["level"] == "site"
    assert m.config["metrics"]["test"]["n_sites"] > 0
    assert len(m.config["database"]["sha256"]) == 64 and m.ood["components"].shape[1] == 160
    mean, std = m.ensemble.mean_std(torch.from_numpy(rows.clean))
    assert mean.shape == std.shape == (len(rows), 2, DOS_GRID.n)
    assert torch.isfinite(mean).all() and float(std.max()) > 0


def test_architecture_choice_prefers_the_smaller_network_only_within_the_seed_spread():
    from napari_corefit.training.study import choose_architecture

    # two_head_mlp has ~4x the weights of paper_mlp
    close = {"paper_mlp": np.array([1.01e-3, 1.03e-3]),
             "two_head_mlp": np.array([0.98e-3, 1.02e-3])}
    assert choose_architecture(close)[0] == "paper_mlp"
    clear = {"paper_mlp": np.array([1.30e-3, 1.32e-3]),
             "two_head_mlp": np.array([0.98e-3, 1.02e-3])}
    name, why = choose_architecture(clear)
    assert name == "two_head_mlp" and "lowest mean validation MSE" in why


def test_study_in_two_processes_trains_the_same_models_as_in_one(tiny_db, tmp_path):
    import json

    from napari_corefit.model.checkpoint import load_model
    from napari_corefit.training.study import run_study

    kw = dict(archs=("paper_mlp",), compare_members=1, members=2, noise_levels=(1e3,),
              molecule=False, extrapolation=False, progress=False, learning_curve=(0.5,),
              settings=TrainSettings(epochs=3, device="cpu", threads=1), noise_max_seconds=600)
    run_study(tiny_db, tmp_path / "serial", **kw)
    res = run_study(tiny_db, tmp_path / "parallel", jobs=2, card=tmp_path / "card.md", **kw)
    assert json.loads((tmp_path / "parallel" / "study.json").read_text())["chosen_arch"] == \
        res["chosen_arch"] == "paper_mlp"
    # the learning-curve model saw fewer training sites, the same test molecules
    half, full = (load_model(tmp_path / "parallel" / n).config for n in ("lc_0.5", "default"))
    assert 0 < half["rows"]["train"] < full["rows"]["train"]
    assert half["rows"]["test"] == full["rows"]["test"]
    assert "## Learning curve" in (tmp_path / "card.md").read_text()
    # the noise models' own time limit, the others' unchanged
    noisy = load_model(tmp_path / "parallel" / "noise_1e3").config
    assert noisy["training"]["max_seconds"] == 600 and full["training"]["max_seconds"] is None
    # the comparison's member is the default's first member, trained once: 4 members, not 5
    cache = tmp_path / "serial" / "member-cache"
    assert len(list(cache.glob("*.json"))) == 4
    arch0 = load_model(tmp_path / "serial" / "arch_paper_mlp").ensemble.members[0].state_dict()
    default0 = load_model(tmp_path / "serial" / "default").ensemble.members[0].state_dict()
    assert all(torch.equal(arch0[k], default0[k]) for k in arch0)
    for name in ("default", "noise_1e3", "lc_0.5"):
        a = load_model(tmp_path / "serial" / name).ensemble.state_dict()
        b = load_model(tmp_path / "parallel" / name).ensemble.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)



def test_card_prints_a_study_command_that_runs_as_printed(tiny_db, tmp_path):
    import shlex

    from napari_corefit.training.study import main

    argv = ["--db", str(tiny_db), "--out", str(tmp_path / "s"), "--archs", "paper_mlp",
            "--compare-members", "1", "--members", "1", "--noise-levels", "",
            "--learning-curve", "", "--no-molecule", "--no-extrapolation", "--epochs", "2",
            "--device", "cpu", "--threads", "1", "--card", str(tmp_path / "card.md"),
            "--notes", "Training data: the tiny database's; it's \"quoted\" (twice)"]
    assert main(argv) == 0
    text = (tmp_path / "card.md").read_text()
    block = text.split("## Reproduce", 1)[1].split("```")[1].strip()
    # a shell reads back exactly the arguments the study ran with, notes included
    assert shlex.split(block) == ["python", "-m", "napari_corefit.training.study", *argv]


def test_quick_retrain_carries_the_side_studies_of_an_earlier_card(tiny_db, tmp_path):
    from napari_corefit.backend import load_database
    from napari_corefit.training.carry import carried_section, read_sections
    from napari_corefit.training.evaluate import evaluate_model
    from napari_corefit.model.checkpoint import load_model
    from napari_corefit.training.study import run_study

    kw = dict(members=2, molecule=False, progress=False,
              settings=TrainSettings(epochs=3, device="cpu", threads=1))
    old = tmp_path / "docs" / "MODEL_CARD.md"
    run_study(tiny_db, tmp_path / "full", archs=("paper_mlp",), compare_members=1,
              noise_levels=(1e3,), learning_curve=(0.5,), extrapolation=False, card=old,
              images=tmp_path / "docs" / "images", noise_max_seconds=600, **kw)
    new = tmp_path / "new" / "MODEL_CARD.md"
    res = run_study(tiny_db, tmp_path / "quick", archs=("paper_mlp",), card=new,
                    images=tmp_path / "new" / "images", carry_from=old, noise_levels=(1e3,),
                    learning_curve=(0.5,), **kw)
    # only the default ensemble was trained
    assert sorted(p.name for p in (tmp_path / "quick").iterdir() if p.is_dir()) == \
        ["default", "member-cache"]
    assert res["carried_from"] == str(old) and res["chosen_arch"] == "paper_mlp"
    before, after = read_sections(old), read_sections(new)
    for title in ("Architectures compared (same split, same database, noise-free)",
                  "Noise study", "Learning curve", "Extrapolation to larger molecules"):
        note, *body = [line for line in after[title] if line.strip()]
        assert note.startswith("> Carried over unchanged from the model card of 20")
        kept = [line for line in before[title] if line.strip() and "](" not in line]
        assert [line for line in body if "](" not in line] == kept
    # the carried plots are linked from the new card's folder
    link = next(line for line in after["Noise study"] if line.startswith("![noise study]("))
    assert link == "![noise study](../docs/images/model_noise.png)"
    assert (new.parent / link[len("![noise study]("):-1]).is_file()
    # the new card's own numbers are its new default's
    s = evaluate_model(load_model(tmp_path / "quick" / "default"), load_database(tiny_db),
                       split="test").summary
    assert f"| {s['n_sites']} | {s['n_molecules']} | {s['mse_occupied']:.4g} |" in \
        "\n".join(after["Test metrics"])
    # carried again, a section keeps the note that says where it was measured
    again = carried_section(new, "Noise study", tmp_path / "third" / "MODEL_CARD.md")
    assert sum(line.startswith("> Carried over") for line in again) == 1
    assert [line for line in again if line.strip()][1] == \
        [line for line in after["Noise study"] if line.strip()][0]
    with pytest.raises(ValueError, match="one architecture"):
        run_study(tiny_db, tmp_path / "x", archs=("paper_mlp", "two_head_mlp"),
                  carry_from=old, **kw)
    bare = tmp_path / "bare.md"
    bare.write_text("# card\n\n## Noise study\n\ntext\n")
    with pytest.raises(ValueError, match="no section to carry"):
        run_study(tiny_db, tmp_path / "y", archs=("paper_mlp",), carry_from=bare, **kw)
    # another architecture than the carried card's choice, with the measurement that says why
    why = "one member's validation MSE 3.6 % below the carried choice's (session notes)"
    res = run_study(tiny_db, tmp_path / "other", archs=("two_head_mlp",), carry_from=old,
                    arch_reason=why, card=tmp_path / "other" / "MODEL_CARD.md",
                    molecule_arch="paper_mlp", **{**kw, "molecule": True})
    assert res["chosen_arch"] == "two_head_mlp" and res["chosen_because"] == why
    assert load_model(res["default"]).config["arch"]["name"] == "two_head_mlp"
    assert load_model(res["molecule"]).config["arch"]["name"] == "paper_mlp"
    assert f"Architecture of this model: `two_head_mlp`, {why}." in \
        (tmp_path / "other" / "MODEL_CARD.md").read_text()
    with pytest.raises(ValueError, match="arch_reason is for a quick retrain"):
        run_study(tiny_db, tmp_path / "z", archs=("paper_mlp",), arch_reason=why, **kw)
    # without a reason, only the carried card's own choice: the next quick retrain of the card
    # just written keeps two_head_mlp unless a measurement says otherwise
    from napari_corefit.training.carry import card_architecture

    assert card_architecture(tmp_path / "other" / "MODEL_CARD.md") == "two_head_mlp"
    with pytest.raises(ValueError, match="chose two_head_mlp, not paper_mlp"):
        run_study(tiny_db, tmp_path / "w", archs=("paper_mlp",),
                  carry_from=tmp_path / "other" / "MODEL_CARD.md", **kw)


def test_training_subsets_are_nested_and_rebuilt_from_the_checkpoint_settings():
    from napari_corefit.training.splits import make_split, split_from_dict, subsample_train

    keys = [f"qm9:{i:06d}" for i in range(2000)]
    sp = make_split("random", keys, seed=3)
    quarter, half = (subsample_train(sp, keys, f) for f in (0.25, 0.5))
    assert set(quarter.train) < set(half.train) < set(sp.train)
    assert abs(len(half.train) / len(sp.train) - 0.5) < 0.05
    assert (half.test == sp.test).all() and (half.val == sp.val).all()
    again = split_from_dict(half.settings(), keys)
    assert (again.train == half.train).all() and again.train_fraction == 0.5


def test_card_training_time_counts_members_reused_from_an_earlier_run():
    from napari_corefit.training.report import _training_seconds

    # the run that saved the ensemble took 5 s: both members were trained before it stopped
    assert _training_seconds({"seconds": 5.0, "members": [{"seconds": 10.0},
                                                          {"seconds": 20.0}]}) == 30.0
    assert _training_seconds({"seconds": 5.0, "members": [{}]}) == 5.0


def test_a_database_of_two_recipes_is_trained_on_and_says_so(tiny_db, tmp_path):
    """The transition between recipes: records of an older recipe for the molecules the newer
    one has not reached. The checkpoint config lists the sites of each recipe."""
    import shutil

    import h5py

    from napari_corefit.backend.storage import read_records, recipe_site_counts, write_shard
    from napari_corefit.training.train import train_model

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    parts = sorted(Path(tiny_db).glob("*.h5"))
    with h5py.File(parts[0], "r") as f:
        recipe = json.loads(f.attrs["recipe"])
        key = f.attrs["shard_key"]
    older = {**recipe, "occupation": "lumo", "version": 2}
    write_shard(mixed, key, read_records(parts[0]), older)
    for p in parts[1:]:
        shutil.copy(p, mixed / p.name)
    counts = {c["recipe"]["version"]: c["n_sites"] for c in recipe_site_counts(mixed)}
    total = sum(int(h5py.File(p, "r").attrs["n_sites"]) for p in parts)
    assert set(counts) == {2, 3} and sum(counts.values()) == total and counts[2] > 0
    m = train_model(mixed, tmp_path / "m", n_members=1, progress=False,
                    settings=TrainSettings(epochs=2, device="cpu"))
    got = {c["recipe"]["version"]: c["n_sites"] for c in m.config["recipes"]}
    assert got == counts
    # each molecule carries its part's recipe, and the card splits the test metrics by it
    from napari_corefit.backend import load_database
    from napari_corefit.training.evaluate import evaluate_model
    from napari_corefit.training.report import size_section

    with pytest.warns(UserWarning, match="2 different recipes"):
        table = load_database(mixed)
    old_keys = {k for k, _ in read_records(parts[0])}
    versions = table.molecules["recipe_version"]
    assert all((v == 2) == (k in old_keys) for k, v in zip(table.molecules["key"], versions))
    ev = evaluate_model(m, table, split="all")
    text = "\n".join(size_section(m, table, ev))
    by_recipe = text[text.index("by the recipe"):]
    for v in (3, 2):
        mask = versions[ev.rows.molecule] == v
        cos = " / ".join(f"{np.nanmedian(ev.scores['cosine'][mask][:, j]):.3f}" for j in (0, 1))
        n_mol = np.unique(ev.rows.molecule[mask]).size
        assert f"| {v} | {int(mask.sum())} | {n_mol} | {cos} |" in by_recipe
    # one recipe: no such entry
    one = train_model(tiny_db, tmp_path / "one", n_members=1, progress=False,
                      settings=TrainSettings(epochs=2, device="cpu"))
    assert "recipes" not in one.config
    single = load_database(tiny_db)
    assert "by the recipe" not in "\n".join(
        size_section(one, single, evaluate_model(one, single, split="all")))


_STUDY_SCRIPT = """
import sys
from napari_corefit.training.loop import TrainSettings
from napari_corefit.training.study import run_study
# four trainings that would run for hours (two queued behind the first two): only an
# interrupt ends them
settings = TrainSettings(epochs=10**6, patience=10**6, threads=1)
run_study(sys.argv[1], sys.argv[2], archs=("paper_mlp", "two_head_mlp"), compare_members=2,
          members=2, noise_levels=(), learning_curve=(), molecule=False, extrapolation=False,
          settings=settings, jobs=2, progress=False)
"""


def _stat(pid):
    """State and parent pid of a process (Linux /proc), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _alive(pid):
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie only waits for its parent to reap it


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children(pid):
    """Pids of the live processes whose parent is ``pid``."""
    return [int(p.name) for p in Path("/proc").glob("[0-9]*")
            if _alive(p.name) and (_stat(p.name) or (None, None))[1] == pid]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
def test_interrupting_a_study_ends_it_and_its_worker_processes(tiny_db, tmp_path):
    """Ctrl-C on a parallel study must end it and its workers. It did not: a pool worker
    catches KeyboardInterrupt like any error and takes the next queued model, and the study
    waited at exit for the whole queue (hours of training after the interrupt)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _STUDY_SCRIPT, str(tiny_db),
                             str(tmp_path / "study")], start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        workers = []
        while len(workers) < 2 and time.monotonic() < deadline:  # the pool's two trainers
            time.sleep(0.5)
            workers = [p for p in _children(proc.pid)  # the pool's, not multiprocessing's
                       if b"resource_tracker" not in _cmdline(p)]
        assert len(workers) == 2, proc.stderr.read() if proc.poll() is not None else workers
        time.sleep(3)  # training now (spawned, imported torch, loaded the database)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(timeout=60) != 0
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers)
        assert not (tmp_path / "study" / "study.json").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
