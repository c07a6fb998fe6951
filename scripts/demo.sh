#!/usr/bin/env bash
# The whole pipeline on synthetic BraTS-like data, on a CPU (called by `make demo`).
#   synthetic data -> plan and preprocess -> train pfseg and resunet3d (fold 0) -> FLAIR-threshold
#   floor -> predict the fold's validation cases and a separate test set -> evaluate -> compare
# Sizes (README, "The demo"): 20 training cases + 6 test cases of MNI152-anatomy data on the
# BraTS grid at 4 mm (60x60x39 voxels, x y z), the `demo` preset (narrow networks, 50 epochs x
# 10 iterations, batch 2). DEMO_ANATOMY=blobs gives the made-up brains of DEMO_SHAPE instead.
set -euo pipefail
DEMO_DIR=${DEMO_DIR:-demo_data}
CASES=${DEMO_CASES:-20}
TEST_CASES=${DEMO_TEST_CASES:-6}
ANATOMY=${DEMO_ANATOMY:-mni152}
SPACING=${DEMO_SPACING:-4}
SHAPE=${DEMO_SHAPE:-"64 64 48"}
if [ "$ANATOMY" = mni152 ]; then
    DATA=(--anatomy mni152 --spacing "$SPACING"); WHAT="MNI152 anatomy at $SPACING mm"
else
    DATA=(--anatomy blobs --shape $SHAPE); WHAT="blobs of $SHAPE voxels"
fi
NAME=Demo
export PFSEG_HOME="$DEMO_DIR/workspace"
start=$(date +%s)
step() { printf '\n==== [%4ds] %s\n' "$(( $(date +%s) - start ))" "$*"; }

step "1/7 synthetic data: $CASES training + $TEST_CASES test cases ($WHAT)"
pfseg_make_synthetic "$DEMO_DIR/raw" --cases "$CASES" "${DATA[@]}" --seed 1 --overwrite -np 2
pfseg_make_synthetic "$DEMO_DIR/test_raw" --cases "$TEST_CASES" "${DATA[@]}" --seed 2 \
    --start-index 901 --overwrite -np 2

step "2/7 verify, fingerprint, plan and preprocess (preset demo)"
pfseg_plan_and_preprocess -i "$DEMO_DIR/raw" -d "$NAME" --preset demo -np 2

for network in pfseg resunet3d; do
    step "3/7 train $network, fold 0 (then predict and score its validation cases)"
    pfseg_train "$NAME" 0 --network "$network" --no-progress
done

step "4/7 the floor: a FLAIR threshold fitted on the training cases"
python -m bench.flair_baseline "$NAME" -f 0

for network in pfseg resunet3d; do
    step "5/7 predict the separate test set with $network"
    pfseg_predict -i "$DEMO_DIR/test_raw" -o "$DEMO_DIR/test_pred/$network" -d "$NAME" \
        --network "$network" -f 0 --overwrite --no-progress
    step "6/7 evaluate $network on the test set"
    pfseg_evaluate -r "$DEMO_DIR/test_raw" -p "$DEMO_DIR/test_pred/$network" \
        -o "$DEMO_DIR/test_pred/$network/summary.json" --report
done

step "7/7 the comparison table (fold 0 validation cases)"
pfseg_compare "$NAME" -f 0
echo
echo "test set (${TEST_CASES} cases never seen in training), WT / TC / ET Dice mean(std):"
for network in pfseg resunet3d; do
    python - "$DEMO_DIR/test_pred/$network/summary.json" "$network" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print(f"  {sys.argv[2]:<10} " + "  ".join(
    f"{r} {s[r]['dice']['mean']:.4f}({s[r]['dice']['std']:.4f})" for r in ("WT", "TC", "ET")))
PY
done
python - "$PFSEG_HOME/results/$NAME/flair_threshold/fold_0/validation/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
print(f"  the floor: a FLAIR threshold's WT {s['WT']['dice']['mean']:.4f}({s['WT']['dice']['std']:.4f}) "
      "(fold 0's validation cases; it predicts no TC or ET)")
PY
echo
echo "pictures: $DEMO_DIR/test_pred/pfseg/report.html (test cases worst first, with their contours)"
echo "demo finished in $(( $(date +%s) - start )) s: OK (outputs in $DEMO_DIR)"
