#!/usr/bin/env bash
# Runs the mask PRG's tests with the `aes` crate's constant-time software
# fallback forced (`--cfg aes_force_soft`), in a separate target directory.
#
# The `aes` crate chooses AES-NI or software at run time and offers no way to
# pick the software path inside one build, so the fallback can only be forced
# by a second build. The same tests then check it against the NIST SP 800-38A
# vectors, the checked-in add_mask words and the independent `softaes`
# reference that the ordinary `cargo test` run checks the hardware path
# against: both paths give identical masks. The test log names the backend.
# Usage: crates/secure-aggregation/scripts/test_soft_aes.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
target="${SOFT_AES_TARGET_DIR:-${CARGO_TARGET_DIR:-target}-aes-soft}"
RUSTFLAGS="--cfg aes_force_soft" CARGO_TARGET_DIR="$target" \
  nice -n 5 cargo test --release -p veil-secure-aggregation --lib prg:: -- --nocapture --test-threads 1
