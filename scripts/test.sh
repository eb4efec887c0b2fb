#!/usr/bin/env bash
# Install (scripts/install.sh) and run the whole test suite under a virtual X display, so that the
# napari/Qt tests draw with Mesa's software OpenGL. Extra arguments go to pytest.
#     bash scripts/test.sh            # everything
#     bash scripts/test.sh -m "not gui" tests/test_io.py
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${COREFIT_VENV:-.venv}

bash scripts/install.sh

# xcb under Xvfb, never "offscreen" (no OpenGL there: napari's canvas fails)
export QT_QPA_PLATFORM=xcb
export MPLBACKEND=Agg
set +e
xvfb-run -a -s "-screen 0 1280x1024x24" "$VENV/bin/python" -m pytest -q "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "[test] pytest collected no tests: treated as an error" >&2
fi
exit $rc
