#!/usr/bin/env bash
# Runs ON the build machine, from the repository root, with .device-carry/ carried along:
#   [WORKERS=N] bash scripts/device_build.sh SECONDS [BUNDLE.xyz]
# unpacks PySCF into /tmp, computes the bundled molecules (default .device-carry/molecules.xyz)
# on all cores (or N workers) until SECONDS have passed, flushes unfinished journals and leaves
# the finished shards as one tarball, $OUT/db.tar (or ./device-db/db.tar): the device tool
# returns at most 8 files, and a build writes one shard part per group of molecules.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
budget=${1:-480}
bundle=${2:-.device-carry/molecules.xyz}
out=${OUT:-device-db}
mkdir -p /tmp/corefit-site "$out"
[ -d /tmp/corefit-site/pyscf ] || tar -C /tmp/corefit-site -xJf .device-carry/pyscf.tar.xz
export PYTHONPATH=/tmp/corefit-site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=1
# SIGINT 90 s after the deadline at the latest: the build stops its workers, and --flush turns
# the journals into shard parts, so nothing finished is lost when a molecule runs long
timeout -s INT "$((budget + 90))" python3 -m napari_corefit.cli db build --xyz "$bundle" \
  -o "$out/db" --workers "${WORKERS:-$(nproc)}" --threads 1 --deadline "$budget" --flush \
  --quiet || echo "build stopped: exit $?"
python3 -m napari_corefit.cli db info "$out/db"
tar -C "$out" -cf "$out/db.tar" db && rm -rf "$out/db"
