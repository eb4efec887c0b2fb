#!/usr/bin/env bash
# Retrain the bundled default model on the committed database, as the model card was made:
#   1. freeze the committed shard parts (a build running beside may add parts at any moment),
#   2. run the study (architectures, ensembles, noise study, extrapolation, learning curve,
#      calibration) and install the winner as the bundled default with its model card,
#   3. rerun the end-to-end benchmark on the new model and reassemble benchmarks/RESULTS.md.
# Resumable: the snapshot and the study directory are named after the commit, and the study
# reuses every model (and every ensemble member) already finished there. To continue a run that
# was stopped, start it again with the commit it began at:
#   RETRAIN_COMMIT=<short hash> bash scripts/retrain.sh [extra study options]
# About 90 minutes on 2 cores for 18 k sites with the 256-wide network (of which the model
# card's ~40 evaluations take about 3 CPU-minutes since 2026-11-26, 30 before); the 512-wide one
# (wide_two_head_mlp) trains about 3x longer per member (renice a running database build to 19).
# Measured at 43 k sites (2026-11-26, commit e9d5546, 2 cores, JOBS=2, no build beside it):
# architecture comparison 49 min, default and molecule ensembles 58 min, the noise-trained
# models 21 min per pair; about 3.3 h in all, more than a 3-hour session: stop it with Ctrl-C
# (or SIGINT to its process group) between models and start it again with RETRAIN_COMMIT.
# Training arithmetic bfloat16 (float32 weights; about 2x faster per epoch on CPUs with AVX-512
# BF16, same validation MSE within the seed spread: docs/model_experiments.md). Weights averaged
# over the steps (--ema-decay 0.999) since session 16: 1 % lower validation MSE per member,
# 0.5-0.7 % lower test MSE for the 5-member ensemble (session 17), no cost.
#
# On a GPU machine (a copy of the working tree without .git, 16 cores): every ensemble member
# trains in a process of its own, so the study takes about as long as its slowest member:
#   RETRAIN_COMMIT=<short hash> PY=python3 JOBS=12 DEVICE=cuda NO_BENCH=1 bash scripts/retrain.sh
# (the end-to-end benchmark needs HyperSpy: run it afterwards here, `NO_STUDY=1`).
#
# QUICK=1: a quick retrain that fits a session on 2 idle cores (~90 minutes at 43 k sites): only
# the default and molecule-level ensembles are trained, in the architectures of the committed
# card and bundled molecule-level model, and the model card
# carries the architecture comparison, noise study, learning curve and extrapolation sections of
# the committed card, each labelled with the card, commit and database size that measured them
# (napari_corefit.training.carry). The full study refreshes them when a session has the time.
# ARCH=<name> ARCH_REASON="<measurement>" trains another architecture than the carried card's
# choice (session 23: deep_wide_two_head_mlp, docs/model_experiments.md).
# Run it with no database build beside it (PAUSE_BUILDS=1 pauses them for the run): a build
# started with setsid is a scheduling group of its own, which `renice` does not hold back.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PY:-.venv/bin/python}
if git rev-parse --git-dir > /dev/null 2>&1; then
    commit=${RETRAIN_COMMIT:-$(git rev-parse --short HEAD)}
    committed() { git ls-tree -r --name-only "$commit" "$1"; }
    # FROM_COMMIT: the commit whose bundled model is the "previous" one and whose card a quick
    # retrain carries, when the database snapshot is an older commit's (a retrain of another
    # architecture on the installed model's own database: RETRAIN_COMMIT=<its commit>)
    from=${FROM_COMMIT:-$commit}
    show() { git show "$from:$1"; }
    listed() { git ls-tree -r --name-only "$from" "$1"; }
else
    # no .git (a device machine's copy): the working tree's files stand for the commit
    commit=${RETRAIN_COMMIT:?"no git here: set RETRAIN_COMMIT to the commit of this copy"}
    from=$commit
    committed() { find "$1" -maxdepth 1 -type f | sort; }
    listed() { committed "$1"; }
    show() { cat "$1"; }
fi
# PAUSE_BUILDS=1: stop the database builds running here (SIGSTOP) while this runs, and let them
# go on when it ends, however it ends (their molecule limits count CPU time, not wall time)
if [ -n "${PAUSE_BUILDS:-}" ]; then
    builds=$(pgrep -f "corefit db build" || true)
    if [ -n "$builds" ]; then
        # shellcheck disable=SC2086
        kill -STOP $builds
        trap 'kill -CONT '"$(echo $builds)"' 2>/dev/null || true' EXIT
        echo "paused database builds: $(echo $builds)" >&2
    fi
fi
snap=work-tmp/db-$commit
out=work-tmp/study-$commit
mkdir -p work-tmp
if [ ! -d "$snap" ]; then
    # committed parts only: parts written after the commit are not in the snapshot (committed
    # parts are never rewritten, so hard links to the working tree's files are that commit's)
    rm -rf "$snap.tmp" && mkdir -p "$snap.tmp"
    committed data/db | grep '\.h5$' | while read -r part; do
        ln "$part" "$snap.tmp/"
    done
    # the recipe-2 records of the molecules recipe 3 has not reached yet (data/db-v2 is pruned
    # with `corefit db forget data/db-v2 --in data/db`; were a molecule in both, the loader keeps
    # the first copy in name order, and qm9-... sorts before recipe2-...: recipe 3 wins)
    committed data/db-v2 | grep '\.h5$' | while read -r part; do
        ln "$part" "$snap.tmp/recipe2-$(basename "$part")"
    done
    mv "$snap.tmp" "$snap"
fi
n_parts=$(ls "$snap" | wc -l)
echo "snapshot $snap: $n_parts committed shard parts" >&2
# the bundled model as committed, before --install replaces it: the card scores it on the new
# model's test sites, by molecule size (the only fair comparison as the test mix shifts)
prev=work-tmp/model-prev-$from
if [ -z "${NO_STUDY:-}" ]; then
    rm -rf "$prev" && mkdir -p "$prev"
    for f in $(listed src/napari_corefit/model/weights/default); do
        show "$f" > "$prev/$(basename "$f")"
    done
fi

notes="Training data: every molecule once, with the newest recipe that has computed it: recipe 3 \
(data/db: every QM9 molecule with up to 7 heavy atoms since 2026-11-26, then 8-heavy-atom ones) \
and recipe 2 for the molecules recipe 3 has not reached (data/db-v2, pruned of the molecules \
data/db holds); the table of test metrics by recipe above splits the test sites accordingly. \
Why recipe 3 is worth the mix: on the recipe-3 spectra of 94 test molecules, replacing 17 % of \
the recipe-2 training spectra by recipe-3 ones lowered the test MSE by 9.6 % (95 % CI 5-14 %; \
docs/model_experiments.md, session 11). \
Training forward and backward passes in bfloat16 autocast (float32 weights, optimiser, \
loss and validation): on the previous model's snapshot two wide members reached validation MSE \
4.94e-4 and 4.90e-4 against 4.89e-4 and 4.97e-4 in float32 (same seeds), at about half the time \
per epoch (docs/model_experiments.md). Weights averaged over the optimiser steps \
(exponential moving average, decay 0.999, the average validated and kept): on the 30,038-site \
snapshot of commit 4bbc278 two wide members (seeds 0, 1) reached validation MSE 4.58e-4 and \
4.62e-4 against 4.63e-4 and 4.67e-4 without (-1.1 % each; five seeds without: 4.63-4.67e-4), \
test MSE -1.9 % per member, -1 % for the 2-member ensemble (docs/model_experiments.md, session \
16); for the 5-member ensemble on the same snapshot -0.5 to -0.7 % and the same median cosine \
(session 17): kept, since it costs nothing. Learning rate 1e-3 instead of the paper's 1e-4 \
(both Adam, batch 256): measured on a \
2,215-site snapshot of this database, one paper-MLP member reached validation MSE 7.95e-4 in 882 \
epochs (40 CPU-s) against 7.87e-4 in 2,586 epochs (112 CPU-s) with 1e-4, test median cosine \
0.919/0.930 against 0.923/0.929 (occupied/unoccupied): the same accuracy at a third of the cost, \
which lets the whole study run on two cores. corefit train keeps the paper's \
1e-4 as its default. The study ran on $snap, hard links to the shard parts of data/db committed \
at $commit, so that the build running beside it could not change the database under it; the \
fingerprint above identifies those parts."

if [ -n "${QUICK:-}" ]; then
    # the committed card, as the commit has it (the study overwrites docs/MODEL_CARD.md), kept
    # in docs/ so that the relative links of the carried sections resolve as they did
    show docs/MODEL_CARD.md > docs/.card-carried.md
    # ARCH: the architecture to train, by default the carried card's choice; another one needs
    # ARCH_REASON, the measurement that chose it, which the card prints
    card_arch=$(sed -n 's/^- Architecture: `\([A-Za-z0-9_]*\)`.*/\1/p' docs/.card-carried.md)
    study_args=(--archs "${ARCH:-$card_arch}" --carry-from docs/.card-carried.md
                --max-minutes 40)
    if [ -n "${ARCH_REASON:-}" ]; then study_args+=(--arch-reason "$ARCH_REASON"); fi
    # MOLECULE_ARCH: the molecule-level ensemble's architecture, if not ARCH's (bundled size);
    # by default the bundled molecule-level model's, as the commit has it
    mol_arch=${MOLECULE_ARCH:-$(show src/napari_corefit/model/weights/default_molecule/config.json |
        "$PY" -c 'import json, sys; print(json.load(sys.stdin)["arch"]["name"])')}
    study_args+=(--molecule-arch "$mol_arch")
    # another architecture's quick retrain of the same snapshot gets a study of its own
    out=work-tmp/quick-$commit${ARCH:+-$ARCH}
else
    study_args=(--archs paper_mlp,two_head_mlp,wide_two_head_mlp,deep_wide_two_head_mlp
                --max-minutes 25)
fi
[ -n "${NO_STUDY:-}" ] || "$PY" -m napari_corefit.training.study --db "$snap" --out "$out" \
    "${study_args[@]}" --threads 1 --jobs "${JOBS:-2}" \
    --device "${DEVICE:-auto}" --lr 1e-3 \
    --precision bfloat16 --ema-decay 0.999 \
    --noise-max-minutes 25 --resume \
    --install --weights-dtype int8 --card docs/MODEL_CARD.md --images docs/images \
    --beyond-db data/db_9heavy --previous-model "$prev" --notes "$notes" "$@"
rm -f docs/.card-carried.md
if [ -z "${NO_BENCH:-}" ]; then
    "$PY" benchmarks/bench_end_to_end.py --db "$snap" --doses 300,3000,30000 --seeds 0,1 \
        --write-md benchmarks/results_end_to_end.md --plot benchmarks/results_end_to_end.png
    bash benchmarks/make_results.sh
fi
echo "done: review docs/MODEL_CARD.md and benchmarks/RESULTS.md, update README's status" >&2
