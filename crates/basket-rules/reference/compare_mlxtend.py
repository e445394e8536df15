#!/usr/bin/env python3
"""Compares Veil's rule sets with mlxtend's on the same pooled baskets.

    compare_mlxtend.py POOLED_BASKETS.csv --min-support S --min-confidence C \
        --max-len L LABEL=VEIL_RULES.csv [LABEL=VEIL_RULES.csv ...]

(the path is after the last `=`, so labels may contain `=`)

POOLED_BASKETS.csv is `basket,item` (the example `mine_simulated
--baskets-out`); each VEIL_RULES.csv is Veil's `write_rules_csv` output. Runs
mlxtend's fpgrowth (the same frequent itemsets as apriori; apriori's dense
candidate arrays do not fit in memory at a million baskets) and
association_rules on the pooled data, times them, and prints for each Veil
rule set the precision and recall of its (antecedent, consequent) pairs
against mlxtend's, over all rules and over mlxtend's top 20 by lift. Uses
the pinned venv of generate_reference.py.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_reference  # noqa: E402


def pooled_frame(path):
    import numpy as np
    import pandas as pd

    rows = pd.read_csv(path, dtype={"basket": np.int64, "item": str})
    baskets, basket_codes = np.unique(rows["basket"].to_numpy(), return_inverse=True)
    items, item_codes = np.unique(rows["item"].to_numpy(), return_inverse=True)
    dense = np.zeros((len(baskets), len(items)), dtype=bool)
    dense[basket_codes, item_codes] = True
    return pd.DataFrame(dense, columns=list(items))


def veil_rules(path):
    with open(path, newline="") as handle:
        return {(row["antecedent"], row["consequent"]) for row in csv.DictReader(handle)}


def main():
    generate_reference.ensure_venv(__file__)
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    parser = argparse.ArgumentParser()
    parser.add_argument("pooled")
    parser.add_argument("--min-support", type=float, required=True)
    parser.add_argument("--min-confidence", type=float, required=True)
    parser.add_argument("--max-len", type=int, required=True)
    parser.add_argument("runs", nargs="+", help="LABEL=VEIL_RULES.csv")
    arguments = parser.parse_args()

    started = time.perf_counter()
    frame = pooled_frame(arguments.pooled)
    loaded = time.perf_counter()
    frequent = fpgrowth(
        frame, min_support=arguments.min_support, use_colnames=True, max_len=arguments.max_len
    )
    rules = association_rules(
        frequent,
        num_itemsets=len(frame),
        metric="confidence",
        min_threshold=arguments.min_confidence,
    )
    finished = time.perf_counter()
    label = generate_reference.label
    reference = {(label(row.antecedents), label(row.consequents)) for row in rules.itertuples()}
    top = rules.sort_values("lift", ascending=False).head(20)
    reference_top = {(label(row.antecedents), label(row.consequents)) for row in top.itertuples()}
    print(
        f"mlxtend 0.23.4 fpgrowth+association_rules: {len(frame)} baskets x {frame.shape[1]} items, "
        f"{len(frequent)} itemsets, {len(reference)} rules, "
        f"{finished - loaded:.2f}s mining (+{loaded - started:.2f}s loading)"
    )
    for run in arguments.runs:
        name, path = run.rsplit("=", 1)
        found = veil_rules(path)
        hits = len(found & reference)
        precision = hits / len(found) if found else float("nan")
        recall = hits / len(reference) if reference else float("nan")
        top_recall = len(found & reference_top) / len(reference_top) if reference_top else float("nan")
        print(
            f"RESULT {name}: veil_rules={len(found)} precision={precision:.3f} "
            f"recall={recall:.3f} recall_of_mlxtend_top20_by_lift={top_recall:.3f}"
        )


if __name__ == "__main__":
    main()
