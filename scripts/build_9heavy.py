"""Build data/db_9heavy: the 30 QM9 molecules with 9 heavy atoms that every model card scores as a
test beyond the training domain (QM9's 9-heavy-atom molecules never enter training).

    .venv/bin/python scripts/build_9heavy.py [-o data/db_9heavy]

The 30 indices are those of the first such set (built 2026-11-24 with recipe 2, kept in
data/db_9heavy-v2 while the bundled model is the recipe-2 one); resumable like any build.
"""
import argparse

from napari_corefit.backend import Molecule
from napari_corefit.backend.runner import build_database

QM9_IDS = [22611, 23431, 25302, 29730, 35307, 39031, 54357, 55054, 69432, 71153, 76367, 89341, 93667, 96417, 97104, 101863, 102425, 105420, 108623, 110838, 114466, 117736, 118827, 122330, 123822, 123835, 124156, 125105, 129091, 131816]

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="data/db_9heavy")
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    mols = [Molecule.from_qm9(i) for i in QM9_IDS]
    print(build_database(mols, a.output, workers=a.workers, threads=1, timeout=900))
