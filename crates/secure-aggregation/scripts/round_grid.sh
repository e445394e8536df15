#!/usr/bin/env bash
# Runs the whole-round simulation over the benchmark grid and prints one line per cell.
# Usage: scripts/round_grid.sh [binary]  (build first:
#   cargo build --release -p veil-secure-aggregation --example simulate_round)
set -euo pipefail
binary="${1:-${CARGO_TARGET_DIR:-target}/release/examples/simulate_round}"
for n in 10 100; do
  for d in 10000 100000 1000000; do
    for dropout in 0 0.1 0.3; do
      "$binary" "$n" "$d" "$dropout"
    done
  done
done
for d in 10000 100000; do
  for dropout in 0 0.1 0.3; do
    "$binary" 1000 "$d" "$dropout"
  done
done
