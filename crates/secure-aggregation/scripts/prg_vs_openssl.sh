#!/usr/bin/env bash
# Mask PRG throughput next to `openssl speed -evp aes-128-ctr`, both pinned to one
# core and run alternately, so that both see the same load on a shared machine.
# Prints one line per round: OpenSSL's 16 KiB-block rate, add_mask's rate at
# 10^5 words (400 KB, one mask of a 10^5-parameter model) and their ratio.
# Usage: crates/secure-aggregation/scripts/prg_vs_openssl.sh [rounds] [core]
set -euo pipefail
rounds="${1:-3}"
core="${2:-1}"
cd "$(dirname "$0")/../../.."
nice -n 5 cargo bench -p veil-secure-aggregation --bench primitives --no-run 2>/dev/null
for _ in $(seq "$rounds"); do
  # OpenSSL reports 1000s of bytes per second; the last column is 16 KiB blocks.
  openssl_gbps=$(taskset -c "$core" openssl speed -elapsed -seconds 3 -evp aes-128-ctr 2>/dev/null |
    awk '/^AES-128-CTR/ { sub(/k$/, "", $NF); printf "%.2f", $NF / 1e6 }')
  # Criterion reports GiB/s; the middle of its first interval is the estimate
  # (a second "thrpt" line, if any, is the change against a saved baseline).
  veil_gbps=$(taskset -c "$core" cargo bench -p veil-secure-aggregation --bench primitives -- \
      --warm-up-time 1 --measurement-time 3 'mask_expansion/add_mask_100000_words' 2>/dev/null |
    awk '/thrpt:/ && !seen { seen = 1; value = $(NF-3); unit = $(NF-2);
                    scale = (unit ~ /GiB/) ? 1.073741824 : (unit ~ /MiB/ ? 0.001048576 : 1);
                    printf "%.2f", value * scale }')
  awk -v o="$openssl_gbps" -v v="$veil_gbps" \
    'BEGIN { printf "openssl aes-128-ctr %.2f GB/s  add_mask %.2f GB/s  ratio %.2f\n", o, v, v / o }'
done
