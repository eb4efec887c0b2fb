"""Inference benchmark: model-only throughput and end-to-end time of ``corefit predict``.

    python benchmarks/bench_inference.py                      # 128, 256, 512 px squared
    python benchmarks/bench_inference.py --sizes 64,128       # quick run
    python benchmarks/bench_inference.py --write-md benchmarks/results_inference.md
    python benchmarks/bench_inference.py --also-model work-tmp/model-prev-XXXXXXX  # and the old

What is measured, in one run on one machine:

1. Model only: ``predict_spectra`` on preprocessed spectra already in memory (spectra/s), for
   the bundled default ensemble (what the engine runs), and a random-weight 5-member ensemble
   and one member of the paper's MLP for reference, per batch size, fp32 and
   autocast, on the CPU and on CUDA when torch sees a GPU.
2. For synthetic SIs of N x N pixels x 1024 channels (float32 ``.hspy``, uncompressed, written
   first, so the page cache is warm for every reader alike), each in a fresh process:
   - *read only*: open lazily and read every block once (the floor for any pass over the file);
   - *io load*: :func:`napari_corefit.io.load_spectrum_image` (opens and computes the survey);
   - *end to end*: ``corefit predict SI --lazy -o OUT.hspy`` (read -> preprocess -> infer ->
     features -> write), with its load / predict / save split, peak memory (anonymous RSS,
     i.e. what the OS cannot drop; the memory-mapped outputs are file pages) and the HWM.

Cost per pixel across sizes shows whether the cost is linear in the pixel count.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


# --------------------------------------------------------------------------------------------
# helpers


class PeakMemory:
    """Samples /proc/self/status every 20 ms: peak anonymous RSS and the RSS high-water mark."""

    def __init__(self):
        self.peak_anon = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _status(keys=("RssAnon", "VmHWM")):
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0]) * 1024
        return out

    def _run(self):
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, self._status().get("RssAnon", 0))
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.hwm = self._status().get("VmHWM", 0)
        self.peak_anon = max(self.peak_anon, self._status().get("RssAnon", 0))


def machine():
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "ram_gib": round(mem, 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "python": platform.python_version()}


def make_si(path, n, channels=1024, tile=64, chunk_pixels=32768):
    """An n x n x channels float32 SI: a noisy synthetic tile repeated (generation stays cheap)."""
    import hyperspy.api as hs

    from napari_corefit.spectra.synthetic import synthetic_si

    energy = 230.0 + 0.1 * np.arange(channels)
    t = min(tile, n)
    yy, xx = np.mgrid[:t, :t]
    edge = 1500 + 3000 * (np.cos(2 * np.pi * yy / 8) * np.cos(2 * np.pi * xx / 8)) ** 2
    _, counts, _ = synthetic_si((t, t), energy=energy, edge_counts=edge, peak_jitter=0.2, seed=1)
    data = np.tile(counts, (n // t + 1, n // t + 1, 1))[:n, :n]
    s = hs.signals.Signal1D(data)
    for ax, name in zip(s.axes_manager.navigation_axes, ("x", "y")):
        ax.name, ax.units, ax.scale = name, "nm", 0.05
    e = s.axes_manager.signal_axes[0]
    e.name, e.units, e.offset, e.scale = "Energy loss", "eV", energy[0], 0.1
    rows = min(n, max(1, chunk_pixels // n))
    s.save(path, overwrite=True, chunks=(rows, n, channels), compression=None)
    return data.nbytes


# --------------------------------------------------------------------------------------------
# children (each measured in a fresh process)


def child_read(path, chunk_pixels):
    import hyperspy.api as hs

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        s = hs.load(path, lazy=True)
        data = s.data
        rows = max(1, chunk_pixels // data.shape[1])
        total = 0.0
        for r0 in range(0, data.shape[0], rows):
            total += float(np.asarray(data[r0:r0 + rows].compute()).sum(dtype=np.float64))
        t = time.perf_counter() - t0
    return {"read_s": t, "peak_anon": mem.peak_anon, "hwm": mem.hwm}


def child_io(path):
    from napari_corefit.io import load_spectrum_image

    t0 = time.perf_counter()
    load_spectrum_image(path, lazy=True)
    return {"io_load_s": time.perf_counter() - t0}


def child_e2e(path, model_dir, out, device, chunk_pixels, batch):
    import tempfile

    from napari_corefit.engine import predict
    from napari_corefit.io import load_spectrum_image
    from napari_corefit.model.checkpoint import load_model

    model = load_model(model_dir, device=device)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        si = load_spectrum_image(path, lazy=True)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=".corefit-") as tmp:
            c1 = time.process_time()
            res = predict(si, model, device=device, chunk_pixels=chunk_pixels, batch_size=batch,
                          store=tmp)
            t2, c2 = time.perf_counter(), time.process_time()
            res.save(out)
            del res
        t3 = time.perf_counter()
    return {"e2e_s": t3 - t0, "load_s": t1 - t0, "predict_s": t2 - t1, "save_s": t3 - t2,
            "predict_cpu_s": c2 - c1,
            "peak_anon": mem.peak_anon, "hwm": mem.hwm}


def run_child(*args):
    cmd = [sys.executable, __file__, "--_child", json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# model only


def model_only(device, members, n_spectra, batches, amps, repeats=3, bundled=False,
               checkpoint=None):
    """Throughput of a random-weight paper MLP ensemble, of the bundled default model, or of
    the model saved in ``checkpoint`` (e.g. the one a retrain replaced)."""
    import torch

    from napari_corefit.model.inference import predict_spectra
    from napari_corefit.model.network import Ensemble, PaperMLP

    if bundled or checkpoint:
        from napari_corefit.model import load_default, load_model

        loaded = load_model(checkpoint) if checkpoint else load_default()
        ens = loaded.ensemble
        members = len(ens.members)
        label = (f"`{checkpoint}`" if checkpoint else "bundled default") + \
            f" ({loaded.config['arch']['name']})"
    else:
        torch.manual_seed(0)
        ens = Ensemble([PaperMLP() for _ in range(members)])
        label = "paper_mlp"
    rng = np.random.default_rng(0)
    e = np.arange(160) * 0.1 - 1.0
    c = rng.uniform(0, 12, (n_spectra, 3)).astype(np.float32)
    x = sum(np.exp(-(e - c[:, i:i + 1]) ** 2) for i in range(3)).astype(np.float32)
    x /= x.sum(1, keepdims=True) * 0.1
    rows = []
    for amp in amps:
        for batch in batches:
            predict_spectra(ens, x[:batch], device=device, batch_size=batch, amp=amp)  # warm-up
            best, best_cpu = np.inf, np.inf
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                predict_spectra(ens, x, device=device, batch_size=batch, amp=amp)
                best = min(best, time.perf_counter() - t0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            rows.append({"device": device, "model": label, "members": members, "batch": batch,
                         "amp": amp or "fp32", "spectra_per_s": n_spectra / best,
                         "spectra_per_cpu_s": n_spectra / best_cpu})
    return rows


# --------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="128,256,512", help="SI edge lengths, comma-separated")
    p.add_argument("--channels", type=int, default=1024)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--chunk-pixels", type=int, default=32768)
    p.add_argument("--workdir", default=None, help="where SIs and outputs go (default: a "
                   "temporary directory, removed afterwards)")
    p.add_argument("--model-spectra", type=int, default=65536)
    p.add_argument("--also-model", action="append", default=[], metavar="DIR",
                   help="time this checkpoint too, as the bundled default (repeatable)")
    p.add_argument("--write-md", default=None, metavar="FILE", help="write the figures there")
    p.add_argument("--note", default=None, help="a line about the conditions of the run, "
                   "printed in the report (e.g. what else the machine was doing)")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        name, *rest = json.loads(args._child)
        fn = {"read": child_read, "io": child_io, "e2e": child_e2e}[name]
        print(json.dumps(fn(*rest)))
        return 0

    import tempfile

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    info = machine()
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["load_avg_start"] = os.getloadavg()[0]
    print(json.dumps(info), file=sys.stderr)

    model_rows = []
    for dev in devices:
        batches = [1024, 8192, 32768] if dev == "cpu" else [32768, 131072, 524288]
        n = args.model_spectra if dev == "cpu" else max(args.model_spectra, 1 << 21)
        amps = [False, "bf16"] if dev == "cpu" else [False, "fp16", "bf16"]
        model_rows += model_only(dev, None, n, batches, amps, bundled=True)
        for path in args.also_model:
            model_rows += model_only(dev, None, n, batches, amps, checkpoint=path)
        model_rows += model_only(dev, args.members, n, batches[:1], [False])
        model_rows += model_only(dev, 1, n, batches[1:2], [False])
        for r in model_rows:
            print(r, file=sys.stderr)

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    e2e_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        from napari_corefit.model.checkpoint import default_model_dir

        model_dir = default_model_dir("site")  # the engine's default: what users run
        for n in sizes:
            si = work / f"si_{n}.hspy"
            nbytes = make_si(si, n, args.channels, chunk_pixels=args.chunk_pixels)
            row = {"n": n, "pixels": n * n, "si_mib": nbytes / 2**20, "file_mib":
                   si.stat().st_size / 2**20}
            row.update(run_child("read", str(si), args.chunk_pixels))
            row["read_anon"] = row.pop("peak_anon")
            row.pop("hwm")
            row.update(run_child("io", str(si)))
            for dev in devices:
                r = dict(row, device=dev)
                r.update(run_child("e2e", str(si), str(model_dir), str(work / f"out_{n}.hspy"),
                                   dev, args.chunk_pixels, None))
                e2e_rows.append(r)
                print(r, file=sys.stderr)
            for f in work.glob(f"out_{n}*"):
                f.unlink()
            si.unlink()
    info["load_avg_end"] = os.getloadavg()[0]
    md = render(info, model_rows, e2e_rows, args)
    print(md)
    if args.write_md:
        Path(args.write_md).write_text(md)
    return 0


def render(info, model_rows, e2e_rows, args):
    lines = [
        "# Inference benchmark (`benchmarks/bench_inference.py`)",
        "",
        f"Run {info['date']} on {info['cpu']}, {info['cores']} cores available, "
        f"{info['ram_gib']} GiB RAM, GPU: {info['gpu']}; torch {info['torch']} "
        f"({info['torch_threads']} threads), Python {info['python']}. Load average "
        f"{info['load_avg_start']:.1f} at the start, {info['load_avg_end']:.1f} at the end. "
        + (args.note or "The machine is shared: other jobs were running."),
        f"Command: `python benchmarks/bench_inference.py --sizes {args.sizes}"
        + "".join(f" --also-model {m}" for m in args.also_model) + "`.",
        "",
        "## Model only (preprocessed spectra in memory -> ensemble mean and std)",
        "",
        "Wall-clock spectra/s, and spectra per CPU-second of the process (all its threads): on "
        "a shared, oversubscribed machine the latter times the number of cores estimates what "
        "the same cores give when they are free.",
        "",
        "| device | model | members | batch | precision | spectra/s | spectra per CPU-s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in model_rows:
        lines.append(f"| {r['device']} | {r['model']} | {r['members']} | {r['batch']} | {r['amp']} | "
                     f"{r['spectra_per_s']:,.0f} | {r['spectra_per_cpu_s']:,.0f} |")
    lines += [
        "",
        f"## End to end, lazy path ({args.channels} channels, float32 .hspy, uncompressed, "
        f"chunk {args.chunk_pixels} pixels, the bundled default model)",
        "",
        "*read only*: open lazily and read every block once. *io load*: `load_spectrum_image` "
        "(includes its survey-image pass over the data). *end to end*: load + predict (read, "
        "preprocess, infer, features, memory-mapped outputs) + save (`OUT.hspy` with 4 DOS "
        "cubes, maps, image). Peak memory: anonymous RSS (not file pages).",
        "",
        "| device | SI | SI size | read only | io load | end to end | = load + predict + save | "
        "e2e / read | e2e per pixel | predict per pixel | predict CPU per pixel | peak mem (e2e) | "
        "peak mem (read) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in e2e_rows:
        lines.append(
            f"| {r['device']} | {r['n']}² | {r['si_mib']:.0f} MiB | {r['read_s']:.2f} s | "
            f"{r['io_load_s']:.2f} s | {r['e2e_s']:.2f} s | {r['load_s']:.2f} + "
            f"{r['predict_s']:.2f} + {r['save_s']:.2f} | {r['e2e_s'] / r['read_s']:.1f}× | "
            f"{1e6 * r['e2e_s'] / r['pixels']:.1f} µs | "
            f"{1e6 * r['predict_s'] / r['pixels']:.1f} µs | "
            f"{1e6 * r['predict_cpu_s'] / r['pixels']:.1f} µs | "
            f"{r['peak_anon'] / 2**20:.0f} MiB | {r['read_anon'] / 2**20:.0f} MiB |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
