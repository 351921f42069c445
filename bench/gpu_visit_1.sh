#!/usr/bin/env bash
# Issue 22, GPU visit, run 1 of 2 (at most 7 minutes on the device): the randomness check under the recipe's exact
# settings, then the recipe sweep bench/sweeps/gpu_visit.json. Here, first: bash ../shared/tools/gpu/prepare
# Device call: carry [".gpu"], timeout_s 480, command:
#   VIT_SCRATCH_COMMIT=<short hash> bash bench/gpu_visit_1.sh
# Then, here: python bench/winner.py <files_at>/sweep.json --budget-minutes 5 (writes configs/cifar10_fast.json),
# copy sweep.json/sweep.png/gpu_checks.json into bench/results/, commit, and start run 2 (bench/gpu_visit_2.sh).
set -uo pipefail
OUT=${OUT:-gpu_visit_out}; mkdir -p "$OUT"
bash .gpu/run python bench/gpu_checks.py --config configs/cifar10_fast.json --json "$OUT/gpu_checks.json" \
  2>&1 | tee "$OUT/gpu_checks.log"
bash .gpu/run python bench/sweep.py bench/sweeps/gpu_visit.json --dataset .gpu/cifar10 --out-dir "$OUT" \
  2>&1 | tee "$OUT/sweep.log"
