#!/usr/bin/env bash
# The README's first command: install suprem_auto and run the whole job on the bundled demo data
# (20 training + 4 held-out MSD Hippocampus cases): integrity check, fingerprint, plans, preprocessing,
# 5-fold cross-validation with a short training budget, best configuration + report + inference recipe,
# then the recipe on the 4 held-out cases and their evaluation. About 10 minutes on 2 CPU cores.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${SUPREM_DEMO_DIR:-$REPO/demo_output}"
BUDGET="${SUPREM_DEMO_BUDGET:-100s}"  # wall time per fold, its final validation included
# Extra suprem_cross_validate flags, e.g. SUPREM_DEMO_TRAIN_ARGS="--patch_size 24x32x24" (default: none; --budget
# already picks the short-budget recipe, a quarter-width network on CPU).
TRAIN_ARGS="${SUPREM_DEMO_TRAIN_ARGS-}"

if [ "${SUPREM_DEMO_SKIP_INSTALL:-0}" != 1 ]; then
  # the CPU build of torch first: an unpinned torch requirement would pull a multi-GB CUDA build
  python3 -m pip install -q torch==2.13.0
  python3 -m pip install -q -e "$REPO"
fi

export SUPREM_RAW="$WORK/raw" SUPREM_PREPROCESSED="$WORK/preprocessed" SUPREM_RESULTS="$WORK/results"
mkdir -p "$SUPREM_RAW"
if [ ! -d "$SUPREM_RAW/Dataset901_HippocampusDemo" ]; then
  cp -r "$REPO/demo/Dataset901_HippocampusDemo" "$SUPREM_RAW/"
fi
RAW="$SUPREM_RAW/Dataset901_HippocampusDemo"

echo "== 1. plan and preprocess"
suprem_plan_and_preprocess -d 901 -np 2

echo "== 2. five-fold cross-validation (budget $BUDGET per fold), report and recipe"
# shellcheck disable=SC2086
suprem_cross_validate -d 901 --budget "$BUDGET" $TRAIN_ARGS | tee "$WORK/crossval.log"

echo "== 3. the recipe on the 4 held-out cases"
RECIPE="$SUPREM_RESULTS/Dataset901_HippocampusDemo/crossval/inference_recipe.json"
COMMAND=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['commands'][0])" "$RECIPE")
COMMAND=${COMMAND//INPUT_FOLDER/$RAW/imagesTs}
COMMAND=${COMMAND//OUTPUT_FOLDER/$WORK/heldout_predictions}
echo "$COMMAND"
eval "$COMMAND"

echo "== 4. evaluation of the held-out predictions"
suprem_evaluate -ref "$RAW/labelsTs" -pred "$WORK/heldout_predictions" -djfile "$RAW/dataset.json"

echo
echo "report:            $SUPREM_RESULTS/Dataset901_HippocampusDemo/crossval/report.html"
echo "inference recipe:  $SUPREM_RESULTS/Dataset901_HippocampusDemo/crossval/inference_instructions.txt"
echo "held-out metrics:  $WORK/heldout_predictions/summary.json"
