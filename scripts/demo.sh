#!/usr/bin/env bash
# Install (scripts/install.sh) and run the main job on the bundled sample spectrum image:
# predict the ground-state site DOS pixel by pixel and per atom column, save the result as HyperSpy
# files and an overview figure under results/, then open napari on them when a display is set.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${COREFIT_VENV:-.venv}
SAMPLE=sample_data/corefit_sample.hspy

bash scripts/install.sh

if [[ ! -e "$SAMPLE" ]]; then
  echo "[demo] $SAMPLE is missing (the bundled sample is not in this checkout yet)" >&2
  exit 1
fi
mkdir -p results
"$VENV/bin/corefit" predict "$SAMPLE" --atoms \
  -o results/sample_result.hspy --plot results/sample_overview.png
echo "[demo] wrote:"
ls -1 results/sample_result*.hspy results/sample_overview.png

if [[ -n "${DISPLAY:-}" ]]; then
  echo "[demo] opening napari (close its window to finish)"
  # the sample SI (ADF + spectra), the DOS cubes and, when written, the derived maps
  files=("$SAMPLE" results/sample_result.hspy)
  [[ -e results/sample_result_maps.hspy ]] && files+=(results/sample_result_maps.hspy)
  "$VENV/bin/napari" --plugin napari-corefit "${files[@]}"
else
  echo "[demo] no DISPLAY: skipping napari; view results/sample_overview.png"
fi
