#!/usr/bin/env bash
# Runs ON the build machine, from the repository root, with .device-carry/ carried along:
#   bash scripts/device_build.sh SECONDS
# unpacks PySCF into /tmp, computes the bundled molecules on all cores until SECONDS have passed,
# and writes finished shards to $OUT/db (or ./device-db), flushing unfinished journals at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
budget=${1:-480}
out=${OUT:-device-db}
mkdir -p /tmp/corefit-site "$out"
tar -C /tmp/corefit-site -xJf .device-carry/pyscf.tar.xz
export PYTHONPATH=/tmp/corefit-site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=1
python3 -m napari_corefit.cli db build --xyz .device-carry/molecules.xyz -o "$out/db" \
  --workers "$(nproc)" --threads 1 --deadline "$budget" --flush --quiet
python3 -m napari_corefit.cli db info "$out/db"
