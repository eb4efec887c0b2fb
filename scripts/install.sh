#!/usr/bin/env bash
# Install napari-corefit on a fresh Debian 12 machine, as root, from the repository root:
#     bash scripts/install.sh
# 1. system packages that headless Qt (xcb under Xvfb) and Mesa's software OpenGL need;
# 2. a virtual environment .venv with torch installed FIRST, then the package with its test extras.
# Safe to run again: it installs only what is missing.
#
# Environment knobs:
#   COREFIT_PYTHON       interpreter that creates the venv (default: python3)
#   COREFIT_VENV         venv folder (default: .venv)
#   COREFIT_TORCH        torch version to pin (default: 2.13.0)
#   COREFIT_TORCH_INDEX  index for torch, e.g. https://download.pytorch.org/whl/cpu
# Why torch first: on the project's build machines `pip install torch==2.13.0` finds a CPU wheel
# lying on disk (pip's find-links); on a machine with only PyPI the same command downloads the
# multi-GB CUDA build. For a CPU-only machine elsewhere set
#   COREFIT_TORCH_INDEX=https://download.pytorch.org/whl/cpu
# and for your own CUDA build install torch into .venv yourself before running this script
# (any torch >= 2.1 satisfies the package).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${COREFIT_PYTHON:-python3}
VENV=${COREFIT_VENV:-.venv}
TORCH_VERSION=${COREFIT_TORCH:-2.13.0}

say() { printf '[install] %s\n' "$*"; }

# --- 1. system packages -----------------------------------------------------------------------
# xvfb/xauth: a virtual X display for the GUI tests (QT_QPA_PLATFORM=offscreen has no OpenGL and
# napari's canvas fails there); libgl1-mesa-dri/libegl1/libglx-mesa0: Mesa software OpenGL;
# the libxcb-*/libxkbcommon-x11 set: what PyQt5's bundled xcb platform plugin links against.
APT_PACKAGES=(
  xvfb xauth
  libgl1 libgl1-mesa-dri libglx-mesa0 libegl1
  libxkbcommon0 libxkbcommon-x11-0
  libx11-xcb1 libxcb1 libxcb-glx0 libxcb-xkb1 libxcb-sync1 libxcb-shm0 libxcb-render0
  libxcb-util1 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
  libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
  libxext6 libxrender1 libxi6 libsm6 libice6
  libdbus-1-3 libfontconfig1 libfreetype6 libglib2.0-0
)
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  APT_PACKAGES+=(python3 python3-venv python3-dev)
elif ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
  APT_PACKAGES+=(python3-venv python3-dev)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "[install] missing system packages: ${missing[*]}" >&2
    echo "[install] run this script as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "system packages present"
fi

# --- 2. virtual environment ---------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# a torch already in the venv (e.g. your own CUDA build) is kept; otherwise the pinned one
if have=$("$VENV/bin/python" -c "import torch; print(torch.__version__)" 2>/dev/null); then
  say "torch $have present (kept)"
  pin=${have%%+*}
else
  say "pip install torch==$TORCH_VERSION${COREFIT_TORCH_INDEX:+ from $COREFIT_TORCH_INDEX}"
  "${PIP[@]}" install -q --progress-bar off \
    ${COREFIT_TORCH_INDEX:+--index-url "$COREFIT_TORCH_INDEX"} "torch==$TORCH_VERSION"
  pin=$TORCH_VERSION
fi

# constraints.txt pins every other package (reproducible installs: a new release of a dependency,
# PySCF above all, must not change CI or the database's numbers overnight); the torch constraint
# keeps pip from replacing that torch while it resolves the package's requirements. The stamp
# skips pip's (slow) re-resolution when neither pyproject.toml nor constraints.txt has changed.
stamp="$VENV/.corefit-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) torch==$pin $(pwd)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && "$VENV/bin/python" -c "import napari_corefit" 2>/dev/null; then
  say "napari-corefit[test] present (pyproject.toml and constraints.txt unchanged)"
else
  say "pip install -c constraints.txt -e .[test]"
  echo "torch==$pin" > "$VENV/torch-constraint.txt"
  "${PIP[@]}" install -q --progress-bar off -c "$VENV/torch-constraint.txt" -c constraints.txt \
    -e ".[test]"
  echo "$want" > "$stamp"
fi

"$VENV/bin/corefit" --version
say "done: activate with  . $VENV/bin/activate"
