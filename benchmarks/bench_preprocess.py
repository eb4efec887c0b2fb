"""Benchmark: the project's power-law background removal against exSpy's, and the full preprocess.

Builds a synthetic (size x size x 1024) float32 carbon K-edge spectrum image (edge + power law +
Poisson), then times, interleaved in the same run so that the machine's other load hits both
alike:

- exSpy ``remove_background(signal_range=(245, 280), background_type="PowerLaw", fast=True)``,
- ``napari_corefit.spectra.remove_powerlaw_background`` with the same window,

and prints the ratio and the largest deviation between the two relative to each pixel's edge
height; then times the full ``preprocess`` (background, resolution matching, smoothing, alignment,
resampling, normalisation, masks).

Run: ``python benchmarks/bench_preprocess.py`` (256 x 256 x 1024) or ``--size 64`` (quick).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
import warnings

import numpy as np


def build_si(size, n_channels=1024, seed=0):
    """Synthetic SI with atom-column-like edge intensity, made in row blocks (bounded memory)."""
    from napari_corefit.spectra.synthetic import synthetic_si

    energy = 230.0 + 0.1 * np.arange(n_channels)
    yy, xx = np.mgrid[0:size, 0:size]
    # a lattice of Gaussian "columns" on a carbon matrix: edge counts vary 1500..6000 per pixel
    columns = np.cos(2 * np.pi * yy / 8.0) * np.cos(2 * np.pi * xx / 8.0)
    edge_counts = 3000.0 + 1500.0 * columns
    counts = np.empty((size, size, n_channels), dtype=np.float32)
    edge_height = np.empty((size, size), dtype=np.float64)
    for r0 in range(0, size, 16):
        r1 = min(r0 + 16, size)
        _, block, truth = synthetic_si((r1 - r0, size), energy, edge_counts[r0:r1],
                                       background_ratio=6.0, peak_jitter=0.15, seed=seed + r0)
        counts[r0:r1] = block
        edge_height[r0:r1] = truth["edge"].max(-1)
    return energy, counts, edge_height


def machine():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Model name"))
    except Exception:  # lscpu missing: the platform string will do
        model = platform.processor() or platform.machine()
    return f"{os.cpu_count()}-core CPU, {model}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="navigation size (size x size)")
    ap.add_argument("--channels", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--no-preprocess", action="store_true", help="skip the full-pipeline timing")
    args = ap.parse_args(argv)

    import exspy
    from hyperspy.misc import utils  # noqa: F401  (import HyperSpy before timing anything)

    from napari_corefit.spectra.background import remove_powerlaw_background

    try:
        import numexpr  # noqa: F401
        import numba  # noqa: F401
        extras = "numexpr + numba installed"
    except ImportError:
        extras = "WITHOUT numexpr/numba (exSpy is slower than its users would see)"

    window = (245.0, 280.0)
    t0 = time.perf_counter()
    energy, counts, edge_height = build_si(args.size, args.channels)
    print(f"synthetic SI {counts.shape} float32 built in {time.perf_counter() - t0:.1f} s; "
          f"{machine()}; {extras}")

    s = exspy.signals.EELSSpectrum(counts)
    ax = s.axes_manager.signal_axes[0]
    ax.offset, ax.scale, ax.units = float(energy[0]), float(energy[1] - energy[0]), "eV"

    # both allocate their result every time (no preallocated output for ours: same work)
    t_ex, t_us = [], []
    ref = ours = None
    for _ in range(args.repeat):
        ref = None
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = s.remove_background(signal_range=window, background_type="PowerLaw",
                                      fast=True, show_progressbar=False)
        t_ex.append(time.perf_counter() - t0)
        ours = None
        t0 = time.perf_counter()
        ours, _ = remove_powerlaw_background(energy, counts, window)
        t_us.append(time.perf_counter() - t0)
    n_pix = counts.shape[0] * counts.shape[1]
    dev = (np.abs(ours - ref.data).max(-1) / edge_height).max()
    te, tu = min(t_ex), min(t_us)
    print(f"exSpy remove_background(fast=True): best {te:.3f} s  (all: "
          f"{', '.join(f'{t:.3f}' for t in t_ex)}) = {n_pix / te / 1e3:.0f} k spectra/s")
    print(f"napari-corefit remove_powerlaw_background: best {tu:.3f} s  (all: "
          f"{', '.join(f'{t:.3f}' for t in t_us)}) = {n_pix / tu / 1e3:.0f} k spectra/s")
    print(f"ratio exSpy / ours (best of each): {te / tu:.1f}x; median ratio "
          f"{np.median(np.array(t_ex) / np.array(t_us)):.1f}x")
    print(f"max |ours - exSpy| / edge height: {dev:.2e}")
    del ref, s

    if not args.no_preprocess:
        from napari_corefit.spectra.pipeline import PreprocessConfig, preprocess

        cfg = PreprocessConfig(background_window=window, instrument_fwhm_ev=0.5,
                               savgol_window_ev=0.7)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = preprocess(energy, counts, cfg)
            times.append(time.perf_counter() - t0)
        tp = min(times)
        print(f"full preprocess (background, broaden to 0.5 eV, Savitzky-Golay 0.7 eV, first "
              f"peak, resample to {res.spectra.shape[-1]} points, normalise, masks): best "
              f"{tp:.3f} s = {n_pix / tp / 1e3:.0f} k spectra/s; usable pixels "
              f"{res.mask.mean():.1%}")
        # what training with noise runs: simulated counts are at the model's width already
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = preprocess(energy, counts, PreprocessConfig(background_window=window))
            times.append(time.perf_counter() - t0)
        tp = min(times)
        print(f"training-path preprocess (no resolution matching, no smoothing): best "
              f"{tp:.3f} s = {n_pix / tp / 1e3:.0f} k spectra/s")
    print(f"load average during the run (1, 5, 15 min): "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
