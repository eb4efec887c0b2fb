"""Peak memory of ``corefit predict --lazy`` for a spectrum image larger than half the RAM.

    python benchmarks/bench_big_si.py                         # N from MemTotal (~0.55 x RAM)
    python benchmarks/bench_big_si.py --size 1024 --small 128 # quicker
    python benchmarks/bench_big_si.py --write-md benchmarks/results_big_si.md

Issue 12 goal: "peak memory bounded for an SI larger than half the RAM (lazy path)".

1. A synthetic float32 SI of N x N pixels x 1024 channels is written as an uncompressed
   HyperSpy ``.hspy`` file (row chunks of ~32 768 pixels) without ever being held in memory: a
   small noisy synthetic tile (:func:`napari_corefit.spectra.synthetic.synthetic_si`) repeated
   lazily by a dask array, saved through a lazy HyperSpy signal. By default N is chosen from
   ``MemTotal`` so that the file is ~0.55 x RAM. The writer's own peak memory is measured too.
2. In a fresh process, what ``corefit predict SI --lazy -o OUT.hspy`` does (bundled default
   model, ``load_spectrum_image(lazy=True)``, ``engine.predict(store=tmpdir)``, ``res.save``),
   with wall time per phase and peak anonymous RSS (``RssAnon`` sampled every 20 ms: what the
   OS cannot drop; memory-mapped outputs and the page cache are file pages) per phase, and the
   RSS high-water mark (``VmHWM``, file pages included).
3. The same for a small SI (default 256 x 256), so the table shows whether peak memory grows
   with the SI size.

Every file is written under a fresh directory in ``--workdir`` (default /work/tmp-bigsi, not
/tmp, which may be small) and removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import PeakMemory, machine  # noqa: E402

CHANNELS = 1024
N_OUT = 300  # DOS grid points per curve (4 curves per pixel)
GiB = 2**30


# --------------------------------------------------------------------------------------------
# helpers


def mem_total(key="MemTotal"):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/meminfo")


def default_size(fraction=0.55, channels=CHANNELS):
    """Edge length N of a square float32 SI of ``fraction`` x MemTotal."""
    return int(np.sqrt(fraction * mem_total() / (4 * channels)))


def si_bytes(n, channels=CHANNELS):
    return n * n * channels * 4


def dos_bytes(n):
    return 4 * n * n * N_OUT * 4


class PhasePeak(PeakMemory):
    """:class:`bench_inference.PeakMemory` that also keeps the peak RssAnon / RssFile per phase
    (set ``.phase``)."""

    def __init__(self):
        super().__init__()
        self.phase = "start"
        self.peaks = {}
        self.timeline = []  # (seconds, phase, RssAnon) about once a second
        self._t0 = time.perf_counter()
        self._n = 0

    @staticmethod
    def _status_all():
        return PeakMemory._status(("RssAnon", "RssFile", "VmHWM"))

    def _sample(self):
        st = self._status_all()
        p = self.peaks.setdefault(self.phase, {"anon": 0, "file": 0})
        p["anon"] = max(p["anon"], st.get("RssAnon", 0))
        p["file"] = max(p["file"], st.get("RssFile", 0))
        self.peak_anon = max(self.peak_anon, st.get("RssAnon", 0))
        self._n += 1
        if self._n % 50 == 1:
            self.timeline.append((time.perf_counter() - self._t0, self.phase,
                                  st.get("RssAnon", 0)))

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.02)

    def set(self, phase):
        self._sample()  # the end of the previous phase
        self.phase = phase
        self._sample()


def run_child(*args):
    """Run ``child_<name>`` in a fresh process; its stderr goes through (progress lines)."""
    cmd = [sys.executable, __file__, "--_child", json.dumps(args)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed with exit status {out.returncode} "
                           f"(its stderr is above)")
    return json.loads(out.stdout.strip().splitlines()[-1])


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# children


def child_write(path, n, channels, chunk_pixels, tile=64):
    """Write an n x n x channels float32 .hspy from a repeated synthetic tile, lazily."""
    import dask
    import dask.array as da
    import hyperspy.api as hs

    from napari_corefit.spectra.synthetic import synthetic_si

    with PhasePeak() as mem:
        t0 = time.perf_counter()
        mem.set("tile")
        energy = 230.0 + 0.1 * np.arange(channels)
        t = min(tile, n)
        yy, xx = np.mgrid[:t, :t]
        edge = 1500 + 3000 * (np.cos(2 * np.pi * yy / 8) * np.cos(2 * np.pi * xx / 8)) ** 2
        _, counts, _ = synthetic_si((t, t), energy=energy, edge_counts=edge, peak_jitter=0.2,
                                    seed=1)
        counts = np.ascontiguousarray(counts, dtype=np.float32)
        rows = min(n, max(1, chunk_pixels // n))
        row_chunks = (rows,) * (n // rows) + ((n % rows,) if n % rows else ())

        def block(block_info=None):
            (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
            yi = np.arange(r0, r1) % t
            xi = np.arange(c0, c1) % t
            return counts[yi[:, None], xi[None, :]]

        data = da.map_blocks(block, chunks=(row_chunks, (n,), (channels,)), dtype=np.float32,
                             meta=np.empty((0, 0, 0), np.float32))
        s = hs.signals.Signal1D(data).as_lazy()
        assert s._lazy and isinstance(s.data, da.Array), "the SI must stay lazy"
        for ax, name in zip(s.axes_manager.navigation_axes, ("x", "y")):
            ax.name, ax.units, ax.scale = name, "nm", 0.05
        e = s.axes_manager.signal_axes[0]
        e.name, e.units, e.offset, e.scale = "Energy loss", "eV", float(energy[0]), 0.1
        s.metadata.General.title = f"synthetic C K SI {n}x{n}"
        mem.set("write")
        t1 = time.perf_counter()
        with dask.config.set(scheduler="threads"):
            s.save(path, overwrite=True, chunks=(rows, n, channels), compression=None,
                   show_progressbar=False)
        t2 = time.perf_counter()
    return {"write_s": t2 - t1, "tile_s": t1 - t0, "write_anon": mem.peak_anon,
            "write_hwm": mem.hwm, "write_peaks": mem.peaks, "rows_per_chunk": rows,
            "file_bytes": os.path.getsize(path)}


def child_e2e(path, out, chunk_pixels):
    """What ``corefit predict SI --lazy -o OUT`` does, with the bundled model, on the CPU."""
    from napari_corefit.engine import predict
    from napari_corefit.io import load_spectrum_image
    from napari_corefit.model import load_default

    with PhasePeak() as mem:
        t0 = time.perf_counter()
        mem.set("model")
        model = load_default(device="cpu")
        t1 = time.perf_counter()
        mem.set("load")
        si = load_spectrum_image(path, lazy=True)
        assert si.lazy, "the SI must be opened lazily"
        t2 = time.perf_counter()
        out = Path(out)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".corefit-") as tmp:
            mem.set("predict")
            c0 = time.process_time()
            res = predict(si, model, device="cpu", chunk_pixels=chunk_pixels, store=tmp)
            t3, c1 = time.perf_counter(), time.process_time()
            store_bytes = sum(f.stat().st_size for f in Path(tmp).iterdir())
            mem.set("save")
            written = res.save(out)
            t4 = time.perf_counter()
            out_bytes = sum(Path(p).stat().st_size for p in written)
            q = np.asarray(res.maps["quality"].data)
            good = int((q == 0).sum())
            masked = int((q & 1).sum())
            del res
        mem.set("end")
    return {"model_s": t1 - t0, "load_s": t2 - t1, "predict_s": t3 - t2, "save_s": t4 - t3,
            "total_s": t4 - t0, "predict_cpu_s": c1 - c0, "peak_anon": mem.peak_anon,
            "hwm": mem.hwm, "peaks": mem.peaks, "timeline": mem.timeline,
            "store_bytes": store_bytes,
            "out_bytes": out_bytes, "outputs": [Path(p).name for p in written],
            "good_pixels": good, "masked_pixels": masked, "pixels": int(q.size)}


# --------------------------------------------------------------------------------------------


def check_disk(work, sizes, margin=2 * GiB):
    """Each SI is removed before the next: the largest needs its SI, the memory-mapped DOS
    store and the saved output at once."""
    need = max(si_bytes(n) + 2 * dos_bytes(n) for n in sizes) + margin
    free = shutil.disk_usage(work).free
    if free < need:
        raise SystemExit(
            f"bench_big_si: not enough free disk space in {work}: {free / GiB:.1f} GiB free, "
            f"{need / GiB:.1f} GiB needed (SI {si_bytes(max(sizes)) / GiB:.1f} GiB + 2 x "
            f"{dos_bytes(max(sizes)) / GiB:.1f} GiB of DOS cubes: memory-mapped store and saved "
            f"output). Use --workdir on a larger disk or a smaller --size.")
    return free, need


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=None,
                   help="edge N of the big SI (default: file ~0.55 x MemTotal)")
    p.add_argument("--small", type=int, default=256, help="edge of the comparison SI")
    p.add_argument("--chunk-pixels", type=int, default=32768)
    p.add_argument("--workdir", default="/work/tmp-bigsi",
                   help="a fresh directory is made (and removed) in it (default %(default)s)")
    p.add_argument("--write-md", default=None, metavar="FILE", help="write the report there")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        name, *rest = json.loads(args._child)
        fn = {"write": child_write, "e2e": child_e2e}[name]
        print(json.dumps(fn(*rest)))
        return 0

    n_big = args.size or default_size()
    sizes = [args.small, n_big]
    info = machine()
    info["mem_total"] = mem_total()
    info["swap_total"] = mem_total("SwapTotal")
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    info["load_start"] = os.getloadavg()
    base = Path(args.workdir)
    base.mkdir(parents=True, exist_ok=True)
    free, need = check_disk(base, sizes)
    info["disk_free"], info["disk_need"] = free, need
    log(json.dumps(info))
    work = Path(tempfile.mkdtemp(dir=base, prefix="bench-"))
    rows = []
    try:
        for n in sizes:
            si = work / f"si_{n}.hspy"
            log(f"writing {n}x{n}x{CHANNELS} SI ({si_bytes(n) / GiB:.2f} GiB) to {si}")
            row = {"n": n, "pixels": n * n, "si_bytes": si_bytes(n)}
            row.update(run_child("write", str(si), n, CHANNELS, args.chunk_pixels))
            log(f"written in {row['write_s']:.0f} s, writer peak anon "
                f"{row['write_anon'] / 2**20:.0f} MiB; corefit predict --lazy ...")
            row.update(run_child("e2e", str(si), str(work / f"out_{n}.hspy"), args.chunk_pixels))
            log(json.dumps(row))
            rows.append(row)
            for f in work.iterdir():  # free the disk before the next size
                shutil.rmtree(f) if f.is_dir() else f.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            base.rmdir()  # only when empty (never remove what others put there)
        except OSError:
            pass
    info["load_end"] = os.getloadavg()
    md = render(info, rows, args)
    print(md)
    if args.write_md:
        Path(args.write_md).write_text(md)
    return 0


def _mib(b):
    return f"{b / 2**20:,.0f} MiB"


def _gib(b):
    return f"{b / GiB:.2f} GiB"


def render(info, rows, args):
    ram = info["mem_total"]
    la0 = " / ".join(f"{x:.1f}" for x in info["load_start"])
    la1 = " / ".join(f"{x:.1f}" for x in info["load_end"])
    cmd = "python benchmarks/bench_big_si.py" + (f" --size {args.size}" if args.size else "") + (
        f" --small {args.small}" if args.small != 256 else "")
    lines = [
        "# Peak memory for an SI larger than half the RAM (`benchmarks/bench_big_si.py`)",
        "",
        f"Run {info['date']} on {info['cpu']}, {info['cores']} cores available, "
        f"{ram / GiB:.1f} GiB RAM (MemTotal), {info['swap_total'] / GiB:.0f} GiB swap, "
        f"GPU: {info['gpu']}; torch {info['torch']}, Python {info['python']}. Load average "
        f"(1 / 5 / 15 min) {la0} at the start, {la1} at the end (the machine is shared: a "
        "database build ran on both cores; this benchmark ran under `nice -n 10`, so its times "
        "are upper bounds).",
        f"Command: `{cmd}`.",
        "",
        f"Synthetic float32 SIs, {CHANNELS} channels, uncompressed `.hspy` written lazily from a "
        f"repeated 64 x 64 synthetic tile (dask, row chunks of ~{args.chunk_pixels} pixels; the "
        "SI is never in memory). Then, in a fresh process, what `corefit predict SI --lazy -o "
        "OUT.hspy` does: bundled default model on the CPU, `load_spectrum_image(lazy=True)` "
        "(incl. its survey pass over the data), `engine.predict(store=tmpdir)` (read, "
        "preprocess, infer, features; 4 DOS cubes of 300 float32 per pixel memory-mapped in the "
        f"store), `EngineResult.save` (uncompressed). chunk_pixels {args.chunk_pixels}.",
        "",
        "Peak anon = peak `RssAnon` sampled every 20 ms (memory the OS cannot drop; memory-mapped "
        "outputs and the page cache are file pages and do not count). HWM = `VmHWM`, the peak "
        "resident set *including* file pages of the memory-mapped store (the kernel reclaims "
        "those under pressure).",
        "",
        "| SI | pixels | SI size | SI / RAM | write | writer peak anon | model + load + predict + "
        "save | total | peak anon: load | predict | save | **peak anon (whole run)** | HWM | "
        "DOS store | output |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pk = r["peaks"]
        lines.append(
            f"| {r['n']}² | {r['pixels']:,} | {_gib(r['si_bytes'])} | "
            f"{r['si_bytes'] / ram:.2f} | {r['write_s']:.0f} s | {_mib(r['write_anon'])} | "
            f"{r['model_s']:.1f} + {r['load_s']:.1f} + {r['predict_s']:.1f} + "
            f"{r['save_s']:.1f} s | {r['total_s']:.0f} s | {_mib(pk['load']['anon'])} | "
            f"{_mib(pk['predict']['anon'])} | {_mib(pk['save']['anon'])} | "
            f"**{_mib(r['peak_anon'])}** | {_mib(r['hwm'])} | {_gib(r['store_bytes'])} | "
            f"{_gib(r['out_bytes'])} |")
    small, big = rows[0], rows[-1]

    def predict_course(r):
        pts = [a for _, ph, a in r["timeline"] if ph == "predict"]
        if len(pts) < 5:
            return "too short to sample"
        q = [pts[min(len(pts) - 1, int(f * len(pts)))] for f in (0.1, 0.25, 0.5, 0.75, 0.99)]
        return " / ".join(f"{a / 2**20:,.0f}" for a in q) + " MiB"

    ratio_px = big["pixels"] / small["pixels"]
    ratio_mem = big["peak_anon"] / small["peak_anon"]
    lines += [
        "",
        f"- The big SI is {big['si_bytes'] / ram:.2f} x RAM ({_gib(big['si_bytes'])} of "
        f"{ram / GiB:.1f} GiB) and its DOS store {big['store_bytes'] / ram:.2f} x RAM; "
        f"{ratio_px:.0f}x the pixels of the small one, with a peak anonymous memory "
        f"{ratio_mem:.2f}x the small one's ({_mib(big['peak_anon'])} against "
        f"{_mib(small['peak_anon'])}, i.e. {big['peak_anon'] / ram:.1%} of the RAM).",
        f"- Predict: {1e6 * big['predict_s'] / big['pixels']:.0f} µs per pixel wall "
        f"({1e6 * big['predict_cpu_s'] / big['pixels']:.0f} µs CPU) for the big SI, "
        f"{1e6 * small['predict_s'] / small['pixels']:.0f} µs "
        f"({1e6 * small['predict_cpu_s'] / small['pixels']:.0f} µs CPU) for the small one; "
        f"{big['pixels'] - big['masked_pixels']:,} of {big['pixels']:,} pixels predicted (not "
        f"masked by preprocessing) in the big SI, {big['good_pixels']:,} with quality 0 (the "
        "synthetic tile is not meant to be in distribution; this run is about memory and time).",
        f"- RssAnon during the big SI's predict phase, sampled at 10 / 25 / 50 / 75 / 99 % of "
        f"its duration: {predict_course(big)} (a leak per block would climb steadily).",
        f"- Writer: {big['rows_per_chunk']} rows per chunk; peak anon {_mib(big['write_anon'])} "
        f"for the big SI against {_mib(small['write_anon'])} for the small one.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
