#!/usr/bin/env bash
# Collects the per-topic result files (each written by its benchmark run) into RESULTS.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
{
  echo "# Benchmark results"
  echo
  echo "Every figure below comes from a run of the named script; each section gives its date,"
  echo "machine and command. The topic files (results_*.md) are the sources; this file is"
  echo "assembled from them by \`benchmarks/make_results.sh\`."
  echo
  for f in results_backend.md results_preprocess.md results_inference.md results_big_si.md \
           results_end_to_end.md results_shard_format.md results_measured.md; do
    [ -f "$f" ] || continue
    sed -e 's/^## /### /' -e 's/^# /## /' "$f"
    echo
  done
} > RESULTS.md
