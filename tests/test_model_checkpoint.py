"""Checkpoints: exact round trips, no pickle, clear errors for every kind of mismatch."""

import json

import numpy as np
import pytest
import torch

from napari_corefit.model import Ensemble, build_network, load_default, load_model, save_model
from napari_corefit.model import checkpoint
from napari_corefit.model.network import ARCHITECTURES, default_arch
from napari_corefit.spectra.grids import DOS_GRID, SPECTRUM_GRID, EnergyGrid


def _ensemble(arch, n=2, seed=0):
    torch.manual_seed(seed)
    return Ensemble([build_network(arch) for _ in range(n)]).eval()


def _config(arch):
    return {"arch": arch, "input_grid": SPECTRUM_GRID, "output_grid": DOS_GRID,
            "noise_counts": None, "metrics": {"test": {"mse_occupied": np.float32(0.5)}}}


@pytest.fixture
def saved(tmp_path):
    arch = {**default_arch("two_head_mlp"), "trunk": [32], "head": [16]}
    ens = _ensemble(arch)
    x = np.random.default_rng(1).random((50, 160)).astype(np.float32)
    ood = checkpoint.fit_ood(x, n_components=4)
    d = save_model(tmp_path / "m", ens, _config(arch), ood=ood)
    return d, ens, ood, x


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_maps_160_to_2x300_and_round_trips(tmp_path, name):
    arch = default_arch(name)
    ens = _ensemble(arch, n=2)
    x = torch.rand(5, 160)
    save_model(tmp_path, ens, _config(arch))
    loaded = load_model(tmp_path)
    assert loaded.ensemble(x).shape == (2, 5, 2, 300)
    assert torch.equal(loaded.ensemble(x), ens(x))


def test_round_trip_is_exact_and_keeps_config_and_ood(saved):
    d, ens, ood, x = saved
    loaded = load_model(d)
    xt = torch.from_numpy(x)
    assert not loaded.ensemble.training
    assert torch.equal(loaded.ensemble(xt), ens(xt))
    mean, std = loaded.ensemble.mean_std(xt)
    assert mean.shape == std.shape == (50, 2, 300) and float(std.max()) > 0
    cfg = loaded.config
    assert cfg["n_members"] == 2 and cfg["format_version"] == checkpoint.FORMAT_VERSION
    assert EnergyGrid.from_dict(cfg["input_grid"]) == SPECTRUM_GRID
    assert loaded.output_grid == DOS_GRID
    assert cfg["metrics"]["test"]["mse_occupied"] == pytest.approx(0.5)
    for k in ("mean", "components", "variance"):
        np.testing.assert_array_equal(loaded.ood[k], ood[k])
    assert loaded.ood["threshold"] == pytest.approx(ood["threshold"])
    # the stored threshold is the 99th percentile of the training inputs' own error
    assert np.mean(loaded.ood_score(x) <= 1.0) == pytest.approx(0.99, abs=0.021)
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]


def test_loading_never_unpickles(saved, monkeypatch):
    d, ens, _, x = saved

    def no_pickle(*a, **k):
        raise AssertionError("torch.load (pickle) was called")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = load_model(d)
    assert torch.equal(loaded.ensemble(torch.from_numpy(x)), ens(torch.from_numpy(x)))


def test_missing_files_are_named(saved):
    d = saved[0]
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_model(d)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(d.parent / "nowhere")


def _edit(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


def test_newer_format_version_is_refused(saved):
    d = saved[0]
    _edit(d, format_version=checkpoint.FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="format version"):
        load_model(d)


def test_not_a_corefit_config(saved):
    d = saved[0]
    (d / "config.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a napari-corefit-model config"):
        load_model(d)


def test_architecture_that_does_not_fit_the_weights(saved):
    d = saved[0]
    cfg = json.loads((d / "config.json").read_text())
    _edit(d, arch={**cfg["arch"], "trunk": [64]})
    with pytest.raises(ValueError, match="do not fit architecture 'two_head_mlp'.*shape"):
        load_model(d)
    _edit(d, arch={**cfg["arch"], "name": "no_such_net"})
    with pytest.raises(ValueError, match="unknown architecture"):
        load_model(d)


def test_more_members_than_stored(saved):
    d = saved[0]
    _edit(d, n_members=3)
    with pytest.raises(ValueError, match="no weights for member 2"):
        load_model(d)


def test_grid_mismatch(saved):
    d = saved[0]
    with pytest.raises(ValueError, match="input_grid is .* expected"):
        load_model(d, input_grid=EnergyGrid(-2.0, 0.1, 160))
    with pytest.raises(ValueError, match="output_grid"):
        load_model(d, output_grid=EnergyGrid(-15.0, 0.05, 300))
    assert load_model(d, input_grid=SPECTRUM_GRID, output_grid=DOS_GRID.to_dict())
    _edit(d, input_grid={"start": -1.0, "step": 0.1, "n": 150})
    with pytest.raises(ValueError, match="grids have 150"):
        load_model(d)


def test_save_requires_grids_and_arch(tmp_path):
    arch = default_arch("paper_mlp")
    with pytest.raises(ValueError, match="input_grid"):
        save_model(tmp_path, _ensemble(arch), {"arch": arch, "output_grid": DOS_GRID})


def test_cuda_without_gpu_is_a_clear_error(saved):
    if torch.cuda.is_available():
        assert load_model(saved[0], device="cuda").device.type == "cuda"
    else:
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            load_model(saved[0], device="cuda")
        assert load_model(saved[0], device="auto").device.type == "cpu"


def test_load_default_without_bundled_model(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "default_model_dir", lambda level="site": tmp_path)
    with pytest.raises(FileNotFoundError, match="no bundled site-level model"):
        load_default()


def test_half_precision_storage_is_smaller_and_close(saved, tmp_path):
    d, ens, ood, x = saved
    h = save_model(tmp_path / "half", ens, load_model(d).config, ood=ood, weights_dtype="float16")
    loaded = load_model(h)
    assert loaded.config["weights_dtype"] == "float16"
    assert next(loaded.ensemble.parameters()).dtype == torch.float32
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    assert size(h) < 0.6 * size(d)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        ref, got = ens(xt), loaded.ensemble(xt)
    assert not torch.equal(got, ref)
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-3 * float(ref.abs().max()))
    with pytest.raises(ValueError, match="weights_dtype"):
        save_model(tmp_path / "bad", ens, load_model(d).config, weights_dtype="int4")


def test_int8_storage_is_a_quarter_and_predicts_the_same_curves(tmp_path):
    from safetensors.torch import load_file

    arch = {**default_arch("two_head_mlp"), "trunk": [256], "head": [128]}
    ens = _ensemble(arch, n=2)
    x = torch.from_numpy(np.random.default_rng(2).random((64, 160)).astype(np.float32))
    full = save_model(tmp_path / "full", ens, _config(arch))
    small = save_model(tmp_path / "int8", ens, _config(arch), weights_dtype="int8")
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    assert size(small) < 0.3 * size(full)
    stored = load_file(str(small / "model.safetensors"))
    assert stored["member0.trunk.0.weight"].dtype == torch.int8
    assert stored["member0.trunk.0.weight.scale"].shape == (256,)
    assert stored["member0.trunk.0.bias"].dtype == torch.float32
    loaded = load_model(small)
    assert loaded.config["weights_dtype"] == "int8"
    assert next(loaded.ensemble.parameters()).dtype == torch.float32
    with torch.no_grad():
        ref, got = ens(x), loaded.ensemble(x)
    assert not torch.equal(got, ref)
    # per row, the worst weight error is half a step of 1/127 of the row's largest weight
    w = ens.members[0].trunk[0].weight.detach()
    w8 = loaded.ensemble.members[0].trunk[0].weight.detach()
    assert float(((w8 - w).abs().amax(1) / w.abs().amax(1)).max()) <= 0.5 / 127 + 1e-6
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=-1)
    assert float(cos.min()) > 0.9999
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-2 * float(ref.abs().max()))
