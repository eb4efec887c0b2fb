#!/usr/bin/env bash
# Prepare a database build on a bigger machine that has Python, numpy, scipy and h5py but no
# PySCF and no network (docs/backend.md, "Building on a bigger machine").
# Writes into .device-carry/ (git-ignored): PySCF as an xz tarball of the installed package
# (~31 MiB) and the selected QM9 molecules as one XYZ bundle (qm9pack's 104 MB do not travel).
#   bash scripts/device_pack.sh [corefit db xyz-bundle options, e.g. --max-heavy 7 --sample 900
#                                --skip-held-by data/db --limit 700 --largest-first]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .device-carry
if [ ! -f .device-carry/pyscf.tar.xz ]; then
  site=$("$PY" -c "import pyscf, os; print(os.path.dirname(os.path.dirname(pyscf.__file__)))")
  # the package, its dist-info and the bundled libraries (libxc, libcint); no tests
  tar -C "$site" --exclude='*/test' --exclude='*/tests' --exclude='__pycache__' \
      -cJf .device-carry/pyscf.tar.xz pyscf $(cd "$site" && ls -d pyscf-*.dist-info)
fi
.venv/bin/corefit db xyz-bundle "$@" -o .device-carry/molecules.xyz
du -sh .device-carry/*
