#!/usr/bin/env bash
# Issue 22, GPU visit, run 2 of 2 (at most 5.5 minutes on the device): the record, configs/cifar10_fast.json as
# bench/winner.py wrote it from run 1's sweep, under a 5-minute wall budget from process start to the end of the test
# evaluation; --record adds the row to bench/results.json (brought back under $OUT: copy it over the repo's).
# Device call: carry [".gpu"], timeout_s 360, command:
#   VIT_SCRATCH_COMMIT=<short hash> bash bench/gpu_visit_2.sh
set -uo pipefail
OUT=${OUT:-gpu_visit_out}; mkdir -p "$OUT"
bash .gpu/run python bench/time_to_accuracy.py --config configs/cifar10_fast.json --dataset .gpu/cifar10 \
  --budget-minutes 5 --record 2>&1 | tee "$OUT/record.log"
cp bench/results.json README.md "$OUT/"  # --record updated both
