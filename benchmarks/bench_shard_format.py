"""What rewriting a database in the current shard format costs in precision and saves in bytes.

Copies the parts of a database into a temporary directory, rewrites them there
(``storage.upgrade_shards``, as ``corefit db upgrade``), and compares the broadened, aligned
model inputs and the DOS targets of every usable site with those from the original parts.
The database itself is not touched, so run it before ``corefit db upgrade``::

    python benchmarks/bench_shard_format.py data/db [--bits 10,7]
"""
import argparse
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from napari_corefit.backend import load_database, records, storage
from napari_corefit.training.dataset import build_curves, make_inputs


def _parts_bytes(d):
    return sum(p.stat().st_size for p in Path(d).glob("*.h5"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("db")
    p.add_argument("--bits", default=str(records.SPEC_WEIGHT_BITS),
                   help="significand bits of the spectrum weights to try (comma-separated)")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")  # mixed-recipe notices
    before = load_database(a.db)
    ca = build_curves(before.ok())
    xa, _ = make_inputs(ca)
    for bits in map(int, a.bits.split(",")):
        records.SPEC_WEIGHT_BITS = bits
        with tempfile.TemporaryDirectory() as d:
            for part in Path(a.db).glob("*.h5"):
                shutil.copy(part, d)
            b0 = _parts_bytes(d)
            storage.upgrade_shards(d)
            b1 = _parts_bytes(d)
            after = load_database(d)
            cb = build_curves(after.ok())
        xb, _ = make_inputs(cb)
        cos = (xa * xb).sum(1) / np.linalg.norm(xa, axis=1) / np.linalg.norm(xb, axis=1)
        order = np.sort(cos)
        print(f"{a.db}, weights to {bits} bits: {b0 / 1e6:.2f} -> {b1 / 1e6:.2f} MB "
              f"({b1 / b0 - 1:+.1%}), {b1 / after.n_sites:.0f} bytes per site; "
              f"DOS targets identical: {np.array_equal(ca.targets, cb.targets)}; "
              f"aligned inputs of {cos.size} usable sites: cosine median {np.median(cos):.7f}, "
              f"lowest three {', '.join(f'{c:.6f}' for c in order[:3])}, "
              f"below 0.999: {int((cos < 0.999).sum())}")


if __name__ == "__main__":
    main()
