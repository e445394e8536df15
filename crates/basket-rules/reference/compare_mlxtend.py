#!/usr/bin/env python3
"""Compares Veil's rule sets with mlxtend's on the same pooled baskets.

    compare_mlxtend.py POOLED_BASKETS.csv --min-support S --min-confidence C \
        --max-len L [--reference mlxtend|exact] [--check-rows N] \
        LABEL=VEIL_RULES.csv [LABEL=VEIL_RULES.csv ...]

(the path is after the last `=`, so labels may contain `=`)

POOLED_BASKETS.csv is `basket,item` (the example `mine_simulated
--baskets-out`, or `scripts/bench-soak --job basket-rules --out`); each
VEIL_RULES.csv is Veil's `write_rules_csv` output (`coordinator rules`).

The reference rule set on the pooled data comes from one of two routes:

- `--reference mlxtend` (the default): mlxtend's fpgrowth (the same frequent
  itemsets as apriori; apriori's dense candidate arrays do not fit in memory
  at a million baskets) and association_rules, timed.
- `--reference exact`: the same frequent itemsets and rules counted exactly
  with numpy (supports of every pair and triple of frequent items as 0/1
  matrix products), for pooled data mlxtend cannot mine in reasonable time.
  Year-long baskets hold many items each, and mlxtend's pure-Python FP-growth
  on a million of them ran for over 30 CPU-minutes without finishing. So
  that the exact route is known to be mlxtend's answer, it first runs both
  on the first N baskets (`--check-rows`, default 100,000) and stops with an
  error unless they give the same rules with the same supports
  (`--check-rows 0` skips the check, for a second run on the same data).

Prints, for each Veil rule set, the precision and recall of its
(antecedent, consequent) pairs against the reference's, over all rules and
over the reference's top 20 by lift. Uses the pinned venv of
generate_reference.py.
"""

import argparse
import csv
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_reference  # noqa: E402


def pooled_matrix(path):
    """The baskets as a dense 0/1 matrix (baskets x items) and the item labels."""
    import numpy as np
    import pandas as pd

    rows = pd.read_csv(path, dtype={"basket": np.int64, "item": str})
    baskets, basket_codes = np.unique(rows["basket"].to_numpy(), return_inverse=True)
    items, item_codes = np.unique(rows["item"].to_numpy(), return_inverse=True)
    dense = np.zeros((len(baskets), len(items)), dtype=bool)
    dense[basket_codes, item_codes] = True
    return dense, [str(item) for item in items]


def mlxtend_rules(dense, items, min_support, min_confidence, max_len):
    """mlxtend's rules as {(antecedent, consequent): (support, confidence, lift)}."""
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    frame = pd.DataFrame(dense, columns=items)
    frequent = fpgrowth(frame, min_support=min_support, use_colnames=True, max_len=max_len)
    rules = association_rules(
        frequent, num_itemsets=len(frame), metric="confidence", min_threshold=min_confidence
    )
    label = generate_reference.label
    return {
        (label(row.antecedents), label(row.consequents)): (row.support, row.confidence, row.lift)
        for row in rules.itertuples()
    }, len(frequent)


def exact_rules(dense, items, min_support, min_confidence, max_len):
    """The rules mlxtend's fpgrowth + association_rules find, by exact counting.

    An itemset is frequent when its count is at least ceil(min_support * n),
    mlxtend's own threshold. Counts of pairs and triples are products of 0/1
    matrices in float32, exact below 2^24 baskets. Only itemsets of frequent
    items are counted: a superset of an infrequent itemset is infrequent.
    """
    import itertools

    import numpy as np

    if max_len > 3:
        raise SystemExit("--reference exact counts itemsets of up to 3 items")
    n = dense.shape[0]
    if n >= 2**24:
        raise SystemExit("--reference exact counts in float32: at most 2^24 baskets")
    threshold = math.ceil(min_support * n)
    counts = {}
    singles = dense.sum(axis=0)
    frequent_items = [i for i in range(len(items)) if singles[i] >= threshold]
    for i in frequent_items:
        counts[(i,)] = int(singles[i])
    columns = dense[:, frequent_items].astype(np.float32)
    if max_len >= 2:
        pairs = columns.T @ columns
        for a, b in itertools.combinations(range(len(frequent_items)), 2):
            if pairs[a, b] >= threshold:
                counts[(frequent_items[a], frequent_items[b])] = int(pairs[a, b])
    if max_len >= 3:
        chunk = 200_000
        for a in range(len(frequent_items)):
            triples = np.zeros((len(frequent_items), len(frequent_items)), dtype=np.float64)
            for start in range(0, n, chunk):
                block = columns[start : start + chunk]
                rows = block[block[:, a] > 0]
                triples += (rows.T @ rows).astype(np.float64)
            for b, c in itertools.combinations(range(a + 1, len(frequent_items)), 2):
                if triples[b, c] >= threshold:
                    key = (frequent_items[a], frequent_items[b], frequent_items[c])
                    counts[key] = int(triples[b, c])
    rules = {}
    for itemset, count in counts.items():
        for size in range(1, len(itemset)):
            for antecedent in itertools.combinations(itemset, size):
                consequent = tuple(i for i in itemset if i not in antecedent)
                confidence = count / counts[antecedent]
                if confidence >= min_confidence:
                    support = count / n
                    lift = confidence / (counts[consequent] / n)
                    key = (
                        generate_reference.label(items[i] for i in antecedent),
                        generate_reference.label(items[i] for i in consequent),
                    )
                    rules[key] = (support, confidence, lift)
    return rules, len(counts)


def veil_rules(path):
    with open(path, newline="") as handle:
        return {(row["antecedent"], row["consequent"]) for row in csv.DictReader(handle)}


def check_exact_against_mlxtend(dense, items, settings, rows):
    """Stops unless the exact route gives mlxtend's rules on the first `rows` baskets."""
    head = dense[:rows]
    started = time.perf_counter()
    reference, _ = mlxtend_rules(head, items, *settings)
    timed = time.perf_counter() - started
    exact, _ = exact_rules(head, items, *settings)
    if reference.keys() != exact.keys():
        raise SystemExit(
            f"exact counting disagrees with mlxtend on the first {len(head)} baskets: "
            f"{len(reference.keys() - exact.keys())} rules only in mlxtend, "
            f"{len(exact.keys() - reference.keys())} only in the exact count"
        )
    worst = max(
        (abs(a - b) / abs(a) for key in reference for a, b in zip(reference[key], exact[key])),
        default=0.0,
    )
    if worst > 1e-9:
        raise SystemExit(f"exact counting's rule metrics differ from mlxtend's by {worst:.3g}")
    print(
        f"check: on the first {len(head)} baskets mlxtend ({timed:.1f}s) and the exact count "
        f"give the same {len(reference)} rules (metrics within {worst:.1e} relative)"
    )


def main():
    generate_reference.ensure_venv(__file__)

    parser = argparse.ArgumentParser()
    parser.add_argument("pooled")
    parser.add_argument("--min-support", type=float, required=True)
    parser.add_argument("--min-confidence", type=float, required=True)
    parser.add_argument("--max-len", type=int, required=True)
    parser.add_argument("--reference", choices=["mlxtend", "exact"], default="mlxtend")
    parser.add_argument("--check-rows", type=int, default=100_000)
    parser.add_argument("runs", nargs="+", help="LABEL=VEIL_RULES.csv")
    arguments = parser.parse_args()
    settings = (arguments.min_support, arguments.min_confidence, arguments.max_len)

    started = time.perf_counter()
    dense, items = pooled_matrix(arguments.pooled)
    loaded = time.perf_counter()
    sizes = dense.sum(axis=1)
    print(
        f"pooled: {dense.shape[0]} baskets x {dense.shape[1]} items, items per basket "
        f"mean {sizes.mean():.2f}, max {sizes.max()} ({loaded - started:.1f}s loading)"
    )
    if arguments.reference == "mlxtend":
        rules, n_itemsets = mlxtend_rules(dense, items, *settings)
        name = "mlxtend 0.23.4 fpgrowth+association_rules"
    else:
        if arguments.check_rows > 0:
            check_exact_against_mlxtend(dense, items, settings, arguments.check_rows)
        else:
            print("check: skipped (--check-rows 0)")
        loaded = time.perf_counter()
        rules, n_itemsets = exact_rules(dense, items, *settings)
        name = "exact count (mlxtend's itemsets and rules)"
    finished = time.perf_counter()
    reference = set(rules)
    top = sorted(rules, key=lambda key: rules[key][2], reverse=True)[:20]
    reference_top = set(top)
    print(
        f"{name}: {n_itemsets} itemsets, {len(reference)} rules, "
        f"{finished - loaded:.2f}s mining"
    )
    for run in arguments.runs:
        label, path = run.rsplit("=", 1)
        found = veil_rules(path)
        hits = len(found & reference)
        precision = hits / len(found) if found else float("nan")
        recall = hits / len(reference) if reference else float("nan")
        top_recall = len(found & reference_top) / len(reference_top) if reference_top else float("nan")
        print(
            f"RESULT {label}: veil_rules={len(found)} precision={precision:.3f} "
            f"recall={recall:.3f} recall_of_reference_top20_by_lift={top_recall:.3f}"
        )


if __name__ == "__main__":
    main()
