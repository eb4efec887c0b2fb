#!/usr/bin/env bash
# Retrain the bundled default model on the committed database, as the model card was made:
#   1. freeze the committed shard parts (a build running beside may add parts at any moment),
#   2. run the study (architectures, ensembles, noise study, extrapolation, learning curve,
#      calibration) and install the winner as the bundled default with its model card,
#   3. rerun the end-to-end benchmark on the new model and reassemble benchmarks/RESULTS.md.
# About 90 minutes on 2 cores for 18 k sites (renice a running database build to 19 first).
# The time limits: ensemble members stopped early after ~4.5 min each at 10 k sites; noise-trained
# members (a fresh noise draw every epoch) were still improving at 8 min. Usage:
#   bash scripts/retrain.sh [extra study options]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
commit=$(git rev-parse --short HEAD)
snap=work-tmp/db-$commit
out=work-tmp/study-$commit
mkdir -p work-tmp
# committed parts only: parts written after the last commit are not in the snapshot
rm -rf "$snap" && mkdir -p "$snap"
git ls-files 'data/db/*.h5' | while read -r part; do ln "$part" "$snap/"; done
n_parts=$(ls "$snap" | wc -l)
echo "snapshot $snap: $n_parts committed shard parts" >&2
# the bundled model as committed, before --install replaces it: the card scores it on the new
# model's test sites, by molecule size (the only fair comparison as the test mix shifts)
prev=work-tmp/model-prev-$commit
rm -rf "$prev" && mkdir -p "$prev"
for f in $(git ls-files src/napari_corefit/model/weights/default); do
    git show "HEAD:$f" > "$prev/$(basename "$f")"
done

notes="Learning rate 1e-3 instead of the paper's 1e-4 (both Adam, batch 256): measured on a \
2,215-site snapshot of this database, one paper-MLP member reached validation MSE 7.95e-4 in 882 \
epochs (40 CPU-s) against 7.87e-4 in 2,586 epochs (112 CPU-s) with 1e-4, test median cosine \
0.919/0.930 against 0.923/0.929 (occupied/unoccupied): the same accuracy at a third of the cost, \
which lets the whole study run on two cores within a session. corefit train keeps the paper's \
1e-4 as its default. The study ran on $snap, hard links to the shard parts of data/db committed \
at $commit, so that the build running beside it could not change the database under it; the \
fingerprint above identifies those parts."

"$PY" -m napari_corefit.training.study --db "$snap" --out "$out" \
    --archs paper_mlp,two_head_mlp --threads 1 --jobs 2 --lr 1e-3 --max-minutes 12 \
    --noise-max-minutes 15 \
    --install --weights-dtype float16 --card docs/MODEL_CARD.md --images docs/images \
    --beyond-db data/db_9heavy --previous-model "$prev" --notes "$notes" "$@"
"$PY" benchmarks/bench_end_to_end.py --db "$snap" --doses 300,3000,30000 --seeds 0,1 \
    --write-md benchmarks/results_end_to_end.md --plot benchmarks/results_end_to_end.png
bash benchmarks/make_results.sh
echo "done: review docs/MODEL_CARD.md and benchmarks/RESULTS.md, update README's status" >&2
