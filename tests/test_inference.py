"""Batched inference (model/inference.py) and the OOD score (model/ood.py)."""

import numpy as np
import pytest
import torch

from napari_corefit.model.inference import Cancelled, predict_spectra, resolve_device
from napari_corefit.model.network import Ensemble, PaperMLP
from napari_corefit.model.ood import fit_ood, ood_score


@pytest.fixture(scope="module")
def ensemble():
    torch.manual_seed(0)
    return Ensemble([PaperMLP() for _ in range(3)])


def _spectra(n, seed=0):
    # smooth positive curves on the 160-point input grid, area-normalised like real inputs
    rng = np.random.default_rng(seed)
    e = np.arange(160) * 0.1 - 1.0
    c = rng.uniform(0, 12, (n, 3))
    y = sum(np.exp(-(e - c[:, i:i + 1]) ** 2) for i in range(3))
    return (y / (y.sum(1, keepdims=True) * 0.1)).astype(np.float32)


def test_matches_single_spectrum_loop(ensemble):
    x = _spectra(37)
    mean, std = predict_spectra(ensemble, x, device="cpu", batch_size=8)
    ensemble.eval()
    for i in range(len(x)):
        m, s = ensemble.mean_std(torch.from_numpy(x[i:i + 1]))
        np.testing.assert_allclose(mean[i], m[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(std[i], s[0].numpy(), rtol=1e-5, atol=1e-6)
    assert mean.shape == (37, 2, 300) and mean.dtype == np.float32
    assert (std > 0).mean() > 0.99  # three different members really spread


def test_batch_size_does_not_change_results(ensemble):
    x = _spectra(50, seed=1)
    ref = predict_spectra(ensemble, x, device="cpu", batch_size=50)
    for bs in (1, 7, 64):
        got = predict_spectra(ensemble, x, device="cpu", batch_size=bs)
        for a, b in zip(got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_leading_shape_and_out_arrays(ensemble):
    x = _spectra(12).reshape(3, 4, 160)
    mean, std = predict_spectra(ensemble, x, device="cpu")
    assert mean.shape == (3, 4, 2, 300)
    out = (np.zeros((12, 2, 300), np.float32), np.zeros((12, 2, 300), np.float32))
    predict_spectra(ensemble, x.reshape(12, 160), device="cpu", out=out)
    np.testing.assert_array_equal(out[0], mean.reshape(12, 2, 300))


def test_single_member_has_zero_std():
    torch.manual_seed(1)
    mean, std = predict_spectra(PaperMLP(), _spectra(4), device="cpu")
    assert np.all(std == 0) and np.isfinite(mean).all()


def test_model_left_in_its_mode(ensemble):
    ensemble.train()
    predict_spectra(ensemble, _spectra(3), device="cpu")
    assert ensemble.training
    ensemble.eval()


def test_cancel_raises_and_progress_reports(ensemble):
    seen = []
    calls = iter(range(100))

    def cancel():
        return next(calls) >= 2  # let two batches run, cancel before the third

    with pytest.raises(Cancelled):
        predict_spectra(ensemble, _spectra(40), device="cpu", batch_size=10,
                        progress=lambda f, m: seen.append(f), cancel=cancel)
    assert seen == [0.0, 0.25]
    seen.clear()
    predict_spectra(ensemble, _spectra(40), device="cpu", batch_size=10,
                    progress=lambda f, m: seen.append(f))
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_device_auto_falls_back_to_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    assert resolve_device(None).type == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_request_without_gpu_is_a_clear_error(ensemble):
    with pytest.raises(RuntimeError, match="device 'cuda' requested"):
        predict_spectra(ensemble, _spectra(2), device="cuda")
    mean, _ = predict_spectra(ensemble, _spectra(2), device="auto")
    assert mean.shape == (2, 2, 300)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", [False, "fp16", "bf16"])
def test_cuda_matches_cpu(ensemble, amp):
    x = _spectra(1000)
    ref = predict_spectra(ensemble, x, device="cpu")
    got = predict_spectra(ensemble, x, device="cuda", batch_size=300, amp=amp)
    tol = {False: 1e-4, "fp16": 5e-3, "bf16": 3e-2}[amp]
    for a, b in zip(got, ref):
        assert np.abs(a - b).max() <= tol * np.abs(ref[0]).max()


def test_bf16_autocast_on_cpu_within_tolerance(ensemble):
    # stated AMP tolerance: 3 % of the curve maximum for bf16 (8-bit mantissa)
    x = _spectra(64)
    ref, _ = predict_spectra(ensemble, x, device="cpu")
    got, _ = predict_spectra(ensemble, x, device="cpu", amp=True)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert 0 < err < 3e-2


def test_ood_score_separates_unseen_shapes():
    train = _spectra(400, seed=2)
    ood = fit_ood(train, n_components=8)
    inside = ood_score(ood, _spectra(200, seed=3))
    # a channel-to-channel oscillation and a single sharp line look like nothing in training
    step = (1 / 16 + 0.05 * (-1.0) ** np.arange(160)).astype(np.float32)[None]
    line = np.zeros((1, 160), np.float32)
    line[0, 80] = 10.0
    outside = ood_score(ood, np.concatenate([step, line]))
    assert np.mean(inside <= 1) > 0.95
    assert np.all(outside > 3)
    assert np.isnan(ood_score({}, train[:2])).all()


def test_thread_count_does_not_change_results(ensemble):
    x = _spectra(100, seed=4)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = predict_spectra(ensemble, x, device="cpu", batch_size=16)
        torch.set_num_threads(2)
        two = predict_spectra(ensemble, x, device="cpu", batch_size=16)
        assert torch.get_num_threads() == 2  # restored after the threaded run
    finally:
        torch.set_num_threads(prev)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
