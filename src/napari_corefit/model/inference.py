"""Batched inference: the ensemble on many spectra, chunk by chunk, on CPU or CUDA.

:func:`predict_spectra` runs a model on an array of preprocessed spectra (input grid) and returns
the ensemble mean and standard deviation of the occupied/unoccupied DOS. :func:`predict_signal`
does the same for every pixel of a spectrum image, raw counts in, reading, preprocessing and
predicting one block of rows at a time so that memory stays bounded for SIs of any size (lazy
HyperSpy signals included).

Both report progress through ``progress(fraction, message)`` and stop between chunks when
``cancel()`` returns true, raising :class:`Cancelled`; nothing partial is returned then.

Device policy: ``"auto"`` takes CUDA when torch sees a GPU and the CPU otherwise; an explicit
``"cuda"`` on a machine without a GPU is an error (RuntimeError naming the fix), never a silent
fallback, so that a benchmark or a batch job never runs on the wrong device unnoticed.
"""

from __future__ import annotations

import functools

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

# one cancellation exception for the whole engine: preprocessing raises the same one
from napari_corefit.model.checkpoint import resolve_device
from napari_corefit.spectra.pipeline import Cancelled

__all__ = [
    "Cancelled",
    "resolve_device",
    "predict_spectra",
    "predict_signal",
    "SignalPrediction",
    "CURVES",
    "DEFAULT_BATCH",
]

#: Spectra per forward pass. On the CPU, 1024 keeps one batch's activations (1024 x 600 floats
#: per member) in a core's cache and was fastest per core-second (46 k/s against 41 k/s at 8192,
#: one thread, 5 members); a GPU wants far larger batches to fill it.
DEFAULT_BATCH = {"cpu": 1024, "cuda": 131072}


def _network(model):
    # a LoadedModel carries its ensemble; a bare Ensemble or network is used as is
    return getattr(model, "ensemble", model)


def _members(net):
    return list(net.members) if hasattr(net, "members") else [net]


def _amp_dtype(amp, dev):
    if not amp:
        return None
    if amp is True:
        # fp16 has the finer mantissa and GPUs run it at full speed; CPUs only have bf16 kernels
        return torch.float16 if dev.type == "cuda" else torch.bfloat16
    return {"fp16": torch.float16, "float16": torch.float16,
            "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[str(amp)]


def _mean_std(members, x, amp_dtype, scale=None):
    """Ensemble mean and std (B, 2, n_out), float32, one member at a time.

    Statistics are accumulated shifted by the first member (sum and sum of squares of
    y_m - y_0): one pass, no (M, B, ...) stack in memory, and no cancellation when sigma is small
    next to the DOS itself. Matches ``torch.std`` (Bessel-corrected) to float32 rounding. ``scale``
    (shape (2, 1), on x's device) multiplies the std: the checkpoint's calibration.
    """
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        y0 = members[0](x).float()
        if len(members) == 1:
            return y0, torch.zeros_like(y0)
        s = torch.zeros_like(y0)
        q = torch.zeros_like(y0)
        for m in members[1:]:
            d = m(x).float().sub_(y0)
            s.add_(d)
            q.addcmul_(d, d)
    n = len(members)
    mean = y0.add_(s, alpha=1.0 / n)
    std = q.sub_(s.mul_(s).div_(n)).div_(n - 1).clamp_(min=0).sqrt_()
    return mean, std if scale is None else std.mul_(scale)


def predict_spectra(model, spectra, device="auto", batch_size=None, amp=False, progress=None,
                    cancel=None, out=None, calibrated=True):
    """Ensemble mean and standard deviation of the DOS for many preprocessed spectra.

    Parameters
    ----------
    model : LoadedModel, Ensemble or torch.nn.Module
        A network mapping (B, n_in) -> (B, 2, n_out); an ensemble's members are run one by one.
        It is put in eval mode (and back afterwards) and moved to ``device``.
    spectra : array_like, shape (..., n_in)
        Spectra on the model's input grid (area-normalised, finite); float32 is used.
    device : {"auto", "cpu", "cuda", "cuda:N"}
        See :func:`resolve_device`.
    batch_size : int, optional
        Spectra per forward pass (default :data:`DEFAULT_BATCH` of the device type).
    amp : bool or {"fp16", "bf16"}
        Mixed precision (autocast). ``True`` is fp16 on CUDA, bf16 on the CPU. Statistics are
        accumulated in float32. Measured against fp32: see ``tests/test_inference.py``.
    progress : callable(fraction, message), optional
    cancel : callable() -> bool, optional
        Checked before every batch; when it returns true, :class:`Cancelled` is raised.
    out : (ndarray, ndarray), optional
        Float32 arrays of shape (N, 2, n_out) (N = number of spectra) to write into, e.g.
        views of a larger preallocated result; returned as ``(mean, std)``.
    calibrated : bool
        Multiply the spread by the checkpoint's ``sigma_scale`` (a LoadedModel's calibration on
        its validation molecules; bare networks have none). False gives the raw ensemble std.

    Returns
    -------
    mean, std : ndarray, shape (..., 2, n_out), float32

    Examples
    --------
    >>> from napari_corefit.model.network import Ensemble, PaperMLP
    >>> _ = torch.manual_seed(0)
    >>> ens = Ensemble([PaperMLP(), PaperMLP()])
    >>> mean, std = predict_spectra(ens, np.zeros((5, 160), np.float32), device="cpu")
    >>> mean.shape, std.dtype
    ((5, 2, 300), dtype('float32'))
    """
    net = _network(model)
    dev = resolve_device(device)
    x = np.asarray(spectra)
    lead, n_in = x.shape[:-1], x.shape[-1]
    x = x.reshape(-1, n_in)
    n = x.shape[0]
    batch = int(batch_size or DEFAULT_BATCH[dev.type])
    if batch < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    members = _members(net)
    amp_dtype = _amp_dtype(amp, dev)
    was_training = net.training
    net.to(dev).eval()
    try:
        n_out = _output_width(members[0], n_in, dev)
        if out is None:
            mean = np.empty((n, 2, n_out), np.float32)
            std = np.empty((n, 2, n_out), np.float32)
        else:
            mean, std = out
            if mean.shape != (n, 2, n_out) or std.shape != (n, 2, n_out):
                raise ValueError(f"out arrays must have shape {(n, 2, n_out)}, got "
                                 f"{mean.shape} and {std.shape}")
        scale = _sigma_scale(model, dev) if calibrated else None
        runner = _run_cuda if dev.type == "cuda" else _run_cpu
        runner(members, x, mean, std, dev, batch, amp_dtype, progress, cancel, scale)
    finally:
        net.train(was_training)
    if out is not None:
        return out
    return mean.reshape(lead + (2, n_out)), std.reshape(lead + (2, n_out))


def _sigma_scale(model, dev):
    scale = getattr(model, "sigma_scale", None)
    if scale is None or np.all(np.asarray(scale) == 1):
        return None
    return torch.as_tensor(np.asarray(scale, np.float32).reshape(2, 1), device=dev)


@torch.inference_mode()
def _output_width(member, n_in, dev):
    return int(member(torch.zeros((1, n_in), device=dev)).shape[-1])


def _check(cancel, progress, done, total, msg="predicting"):
    if cancel is not None and cancel():
        raise Cancelled(f"cancelled after {done} of {total} spectra")
    if progress is not None:
        progress(done / max(total, 1), f"{msg} {done}/{total}")


def _run_cpu(members, x, mean, std, dev, batch, amp_dtype, progress, cancel, scale=None):
    """Batches spread over ``torch.get_num_threads()`` Python threads, one torch thread each.

    The network is small: one batch's matrix products are too short for torch's own threads to
    pay for their synchronisation (on a busy machine they spin), whereas independent batches on
    separate threads (torch releases the GIL) keep every core busy, each batch's activations in
    its core's cache. Every batch is computed exactly as it would be alone, so the result does
    not depend on the number of threads.
    """
    n = x.shape[0]
    threads = max(1, torch.get_num_threads())

    def work(i0):
        i1 = min(i0 + batch, n)
        with torch.inference_mode():
            xb = torch.from_numpy(np.ascontiguousarray(x[i0:i1], dtype=np.float32))
            m, s = _mean_std(members, xb, amp_dtype, scale)
            mean[i0:i1] = m.numpy().reshape(i1 - i0, *mean.shape[1:])
            std[i0:i1] = s.numpy().reshape(i1 - i0, *std.shape[1:])

    starts = range(0, n, batch)
    if threads == 1 or len(starts) == 1:
        for i0 in starts:
            _check(cancel, progress, i0, n)
            work(i0)
    else:
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                pending = deque()
                for i0 in starts:
                    _check(cancel, progress, i0, n)
                    pending.append(pool.submit(work, i0))
                    while len(pending) >= 2 * threads:  # bounded work in flight
                        pending.popleft().result()
                while pending:
                    pending.popleft().result()
        finally:
            torch.set_num_threads(threads)
    _check(None, progress, n, n)


@torch.inference_mode()
def _run_cuda(members, x, mean, std, dev, batch, amp_dtype, progress, cancel, scale=None):
    """Two pinned host slots, so that the host copies batch k+1 while the GPU works on batch k.

    Host -> device and device -> host copies are non-blocking from/to pinned memory; a slot is
    reused only after the CUDA event recorded at the end of its last batch has completed.
    """
    n, n_in = x.shape
    width = mean.shape[1] * mean.shape[2]
    rows = min(batch, n)
    slots = [dict(x=torch.empty((rows, n_in), dtype=torch.float32, pin_memory=True),
                  m=torch.empty((rows, width), dtype=torch.float32, pin_memory=True),
                  s=torch.empty((rows, width), dtype=torch.float32, pin_memory=True),
                  pending=None) for _ in range(2)]

    def finish(slot):
        ev, i0, i1 = slot["pending"]
        ev.synchronize()
        mean[i0:i1] = slot["m"][: i1 - i0].numpy().reshape(i1 - i0, *mean.shape[1:])
        std[i0:i1] = slot["s"][: i1 - i0].numpy().reshape(i1 - i0, *std.shape[1:])
        slot["pending"] = None

    try:
        for k, i0 in enumerate(range(0, n, batch)):
            _check(cancel, progress, i0, n)
            i1 = min(i0 + batch, n)
            slot = slots[k % 2]
            if slot["pending"] is not None:
                finish(slot)
            xb = slot["x"][: i1 - i0]
            xb.copy_(torch.from_numpy(np.ascontiguousarray(x[i0:i1], dtype=np.float32)))
            m, s = _mean_std(members, xb.to(dev, non_blocking=True), amp_dtype, scale)
            slot["m"][: i1 - i0].copy_(m.reshape(i1 - i0, -1), non_blocking=True)
            slot["s"][: i1 - i0].copy_(s.reshape(i1 - i0, -1), non_blocking=True)
            ev = torch.cuda.Event()
            ev.record()
            slot["pending"] = (ev, i0, i1)
        for slot in sorted((s for s in slots if s["pending"]), key=lambda s: s["pending"][1]):
            finish(slot)
    finally:
        torch.cuda.synchronize(dev)
    _check(None, progress, n, n)


# --------------------------------------------------------------------------------------------
# whole spectrum images


@dataclass
class SignalPrediction:
    """Per-pixel arrays of :func:`predict_signal`; ``shape`` is the SI's navigation array shape.

    Attributes
    ----------
    dos : ndarray, shape (4,) + shape + (n_out,), float32
        Curves first, in the order of ``CURVES``: occupied mean, unoccupied mean, occupied std,
        unoccupied std (ensemble); NaN where the preprocessing masked the pixel. Curves first
        so that each cube is contiguous (a HyperSpy signal without a copy, saved as it is).
    peak_energy : ndarray, shape, float64
        First-peak energy (eV, energy-loss axis) that aligned the spectrum.
    mask : ndarray, shape, bool
        Usable pixels (preprocessing mask).
    reason : ndarray, shape, uint8
        Preprocessing reason code (0 = usable).
    edge_counts : ndarray, shape, float32
        Background-subtracted edge counts (the noise level N).
    ood : ndarray, shape, float32
        OOD score (1 = training 99th percentile); NaN when masked or the model has none.
    """

    dos: np.ndarray
    peak_energy: np.ndarray
    mask: np.ndarray
    reason: np.ndarray
    edge_counts: np.ndarray
    ood: np.ndarray
    lowloss: object = None

    @property
    def mean(self):
        """Ensemble mean, shape + (2, n_out) (a view)."""
        return np.moveaxis(self.dos[:2], 0, -2)

    @property
    def std(self):
        """Ensemble standard deviation, shape + (2, n_out) (a view)."""
        return np.moveaxis(self.dos[2:], 0, -2)


#: Curve order of :attr:`SignalPrediction.dos` and of saved DOS files.
CURVES = ("occupied", "unoccupied", "occupied_std", "unoccupied_std")


def _row_blocks(data, chunk_pixels):
    """(start, stop) row ranges along axis 0, aligned to dask chunks when the data is lazy.

    Blocks are whole dask chunks when a chunk holds at most ``chunk_pixels`` pixels, so that no
    chunk is read (decompressed) twice; larger chunks are read in parts, so memory stays bounded.
    """
    n_rows = data.shape[0]
    row_pixels = int(np.prod(data.shape[1:-1], dtype=np.int64)) or 1
    rows = max(1, int(chunk_pixels) // row_pixels)
    chunks = getattr(data, "chunks", None)
    if chunks is not None and isinstance(chunks[0], tuple) and len(chunks[0]) > 1:
        c = chunks[0][0]
        if c <= rows:
            rows = (rows // c) * c
    return [(r0, min(r0 + rows, n_rows)) for r0 in range(0, n_rows, rows)]


def _read(data, r0, r1):
    block = data[r0:r1]
    if hasattr(block, "compute"):
        block = block.compute()
    return np.asarray(block)


def _preprocess_config(model, config):
    if config is not None:
        return config
    from napari_corefit.spectra.pipeline import PreprocessConfig

    cfg = getattr(model, "config", None) or {}
    if cfg.get("preprocess"):
        return PreprocessConfig.from_dict(cfg["preprocess"])
    return PreprocessConfig()


def _default_preprocess():
    from napari_corefit.spectra.pipeline import preprocess

    return preprocess


def _allocate(shape, dtype, store, name):
    # not filled: every block writes all of its rows (a fill would touch the whole store twice)
    if store is None:
        return np.empty(shape, dtype)
    return np.lib.format.open_memmap(Path(store) / f"{name}.npy", mode="w+", dtype=dtype,
                                     shape=shape)


def predict_signal(model, signal, config=None, device="auto", batch_size=None, amp=False,
                   chunk_pixels=32768, progress=None, cancel=None, store=None, preprocess=None,
                   prefetch=True, block_hook=None, lowloss=None, lowloss_options=None,
                   dead_channels=None):
    """Preprocess and predict every pixel of a spectrum image, block by block.

    Each block of rows (about ``chunk_pixels`` pixels) is read (computed, when the signal is
    lazy), preprocessed, and its usable pixels predicted; results go into preallocated outputs.
    Peak memory is the outputs plus a few blocks, whatever the SI's size; with ``store`` the
    outputs are memory-mapped ``.npy`` files there, so that memory stays bounded for SIs larger
    than RAM too. While one block is preprocessed and predicted, the next is read in a thread.

    Parameters
    ----------
    model : LoadedModel, Ensemble or torch.nn.Module
    signal : hyperspy Signal1D (or LazySignal1D)
        Raw counts; navigation (y, x) (any number of navigation axes works), signal axis energy
        loss in eV.
    config : PreprocessConfig, optional
        Default: the checkpoint's ``config["preprocess"]``, else ``PreprocessConfig()``.
    device, batch_size, amp, progress, cancel
        As in :func:`predict_spectra`; progress fractions cover the whole image.
    chunk_pixels : int
        Pixels per block (rounded to whole rows, and to whole dask chunks of the first axis).
    store : path, optional
        Existing directory for memory-mapped outputs (``dos.npy``, ``mask.npy``, ...), so that
        memory stays bounded when the outputs are larger than RAM (the DOS cubes hold 1200
        floats per pixel). They are removed again if the run is cancelled or fails.
    preprocess : callable(energy, counts, config) -> PreprocessResult, optional
        Default :func:`napari_corefit.spectra.pipeline.preprocess`.
    prefetch : bool
        Read the next block in a background thread.
    block_hook : callable(r0, r1, counts), optional
        Called with every block of raw counts (rows ``r0:r1`` of the first navigation axis), so
        that a caller can accumulate more from the same read (e.g. per-atom sums).
    lowloss : hyperspy Signal1D, optional
        Low-loss SI of the same scan: drift alignment, resolution from the zero-loss width and
        Fourier-ratio deconvolution (:func:`napari_corefit.spectra.lowloss.
        preprocess_with_lowloss`, in memory, whole image) before the model.
    lowloss_options : dict, optional
        ``align``, ``deconvolve``, ``zlp_range`` for that function.
    dead_channels : array_like of int, optional
        Channels that are NaN or Inf in every spectrum (interpolated; spectra whose model
        window holds one are masked). None: found in the signal
        (:func:`napari_corefit.spectra.pipeline.find_dead_channels`), so that every block
        treats them alike.

    Returns
    -------
    SignalPrediction
        With ``lowloss``, its ``lowloss`` attribute holds the
        :class:`~napari_corefit.spectra.lowloss.LowLossCorrection`.

    Raises
    ------
    Cancelled
        ``cancel()`` returned true; no partial output is left (memory-mapped files deleted).
    """
    from napari_corefit.model.ood import ood_score

    from napari_corefit.spectra.pipeline import find_dead_channels

    if dead_channels is None:
        dead_channels = find_dead_channels(signal.data)
    dead_channels = np.asarray(dead_channels, dtype=np.int64)
    if preprocess is None or preprocess is _default_preprocess():
        # the same dead channels for every block (not each block's own)
        preprocess = functools.partial(_default_preprocess(), dead_channels=dead_channels)
    config = _preprocess_config(model, config)
    lowloss_correction = None
    if lowloss is not None or getattr(config, "pca_components", None):
        # the low-loss corrections (exSpy, whole spectra of all pixels) and PCA denoising mix
        # pixels: preprocess the whole image first, then predict block by block from the
        # preprocessed spectra (the raw blocks are still read, for block_hook)
        preprocess = _WholeImage(signal, config, progress, cancel, lowloss, lowloss_options,
                                 dead_channels)
        lowloss_correction = preprocess.correction
        if progress is not None:  # that took the first half of the progress range
            progress = _Scaled(progress, 0.5, 0.5)
    energy = np.asarray(signal.axes_manager.signal_axes[0].axis, dtype=np.float64)
    data = signal.data
    if data.ndim == 1:
        data = data[None]
    shape = tuple(data.shape[:-1])
    n_pix = int(np.prod(shape, dtype=np.int64))
    dev = resolve_device(device)
    net = _network(model)
    ood_model = getattr(model, "ood", None) or None
    n_in = _input_width(model)
    n_out = _output_width(_members(net)[0].to(dev), n_in, dev)
    names = []
    try:
        outs = {}
        for name, dims, dtype in [("dos", (4,) + shape + (n_out,), np.float32),
                                  ("peak_energy", shape, np.float64),
                                  ("mask", shape, bool),
                                  ("reason", shape, np.uint8),
                                  ("edge_counts", shape, np.float32),
                                  ("ood", shape, np.float32)]:
            names.append(name)
            outs[name] = _allocate(dims, dtype, store, name)
        blocks = _row_blocks(data, chunk_pixels)
        row_pixels = n_pix // max(shape[0], 1)
        with ThreadPoolExecutor(max_workers=1) as pool:
            nxt = pool.submit(_read, data, *blocks[0]) if prefetch else None
            for b, (r0, r1) in enumerate(blocks):
                done = r0 * row_pixels
                _check(cancel, progress, done, n_pix, "pixels")
                counts = nxt.result() if prefetch else _read(data, r0, r1)
                if prefetch and b + 1 < len(blocks):
                    nxt = pool.submit(_read, data, *blocks[b + 1])
                if block_hook is not None:
                    block_hook(r0, r1, counts)
                res = preprocess(energy, counts, config)
                lead = counts.shape[:-1]
                mask = np.asarray(res.mask, bool).reshape(-1)
                spectra = np.asarray(res.spectra, np.float32).reshape(mask.size, -1)
                sl = slice(r0, r1)
                outs["mask"][sl] = mask.reshape(lead)
                outs["peak_energy"][sl] = np.asarray(res.peak_energy).reshape(lead)
                outs["reason"][sl] = np.asarray(res.reason).reshape(lead)
                outs["edge_counts"][sl] = np.asarray(res.edge_counts).reshape(lead)
                good = np.flatnonzero(mask)
                # the block's rows of each curve are contiguous: write through a (4, P, n) view
                dos = outs["dos"][:, sl].reshape(4, mask.size, n_out)
                assert np.may_share_memory(dos, outs["dos"]), "the block view must not copy"
                dos[:, ~mask] = np.nan
                ood = np.full(mask.size, np.nan, np.float32)
                if good.size:
                    sub = _BlockProgress(progress, done, n_pix, mask.size)
                    x = spectra if good.size == mask.size else spectra[good]
                    m, sd = predict_spectra(model, x, device=dev, batch_size=batch_size, amp=amp,
                                            progress=sub, cancel=cancel)
                    idx = slice(None) if good.size == mask.size else good
                    dos[0, idx], dos[1, idx] = m[:, 0], m[:, 1]
                    dos[2, idx], dos[3, idx] = sd[:, 0], sd[:, 1]
                    if ood_model:
                        ood[good] = ood_score(ood_model, x)
                outs["ood"][sl] = ood.reshape(lead)
            _check(None, progress, n_pix, n_pix, "pixels")
    except BaseException:
        if store is not None:
            outs = None
            for name in names:
                (Path(store) / f"{name}.npy").unlink(missing_ok=True)
        raise
    if signal.data.ndim == 1:
        outs = {k: (v[:, 0] if k == "dos" else v[0]) for k, v in outs.items()}
    return SignalPrediction(**outs, lowloss=lowloss_correction)


class _Scaled:
    def __init__(self, progress, start, span):
        self.progress, self.start, self.span = progress, start, span

    def __call__(self, fraction, message):
        self.progress(self.start + self.span * fraction, message)


class _WholeImage:
    """A ``preprocess`` that answers each block from one whole-image preprocessing run."""

    def __init__(self, signal, config, progress, cancel, lowloss=None, lowloss_options=None,
                 dead_channels=None):
        half = None if progress is None else (lambda f, m: progress(0.5 * f, m))
        self.correction = None
        if lowloss is not None:
            from napari_corefit.spectra.lowloss import preprocess_with_lowloss

            self.res, self.correction = preprocess_with_lowloss(
                signal, lowloss, config, progress=half, cancel=cancel, **(lowloss_options or {}))
        else:
            from napari_corefit.spectra.pipeline import preprocess_signal

            self.res = preprocess_signal(signal, config, progress=half, cancel=cancel,
                                         dead_channels=dead_channels)
        self.row = 0

    def __call__(self, energy, counts, config):
        r0, r1 = self.row, self.row + counts.shape[0]
        self.row = r1
        res = self.res
        if res.mask.ndim == 0:
            return res
        return SimpleNamespace(**{name: getattr(res, name)[r0:r1] for name in
                                  ("spectra", "peak_energy", "mask", "reason", "edge_counts")})


def _input_width(model):
    cfg = getattr(model, "config", None) or {}
    if "input_grid" in cfg:
        return int(cfg["input_grid"]["n"])
    from napari_corefit.spectra.grids import SPECTRUM_GRID

    return SPECTRUM_GRID.n


class _BlockProgress:
    """Maps a block's own progress (fraction of its usable pixels) onto the whole image."""

    def __init__(self, progress, done, n_pix, block_pixels):
        self.progress, self.done, self.n_pix, self.block = progress, done, n_pix, block_pixels

    def __call__(self, fraction, message):
        if self.progress is not None:
            px = self.done + int(fraction * self.block)
            self.progress(px / max(self.n_pix, 1), f"pixels {px}/{self.n_pix}")
