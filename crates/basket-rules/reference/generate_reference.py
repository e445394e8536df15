#!/usr/bin/env python3
"""Reference tables for veil-basket-rules: mlxtend's apriori and
association_rules on the checked-in basket data set.

Reads baskets.csv beside this file (long format `basket,item`: 90 baskets
over 12 categories, written once by

    cargo run --release -p veil-basket-rules --example mine_simulated -- \
        --categories 12 --partners 3 --customers-per-partner 30 \
        --mean-basket-size 3 --max-basket-size 6 --planted-pairs 3 \
        --pair-rate 0.5 --baskets-out crates/basket-rules/reference/baskets.csv

and then fixed) and writes, beside it,

  mlxtend_itemsets.csv  itemset (labels joined by `|`, sorted), support
  mlxtend_rules.csv     antecedent, consequent, support, confidence, lift

with apriori(min_support=0.05, max_len=3) and
association_rules(metric="confidence", min_threshold=0.3), floats printed
with repr (round-trip exact). The Rust test tests/reference.rs mines the same
baskets, split over three partners, and compares every row.

Usage (from anywhere; it makes its own virtual environment):

    python3 crates/basket-rules/reference/generate_reference.py

The environment lives in $VEIL_BASKET_RULES_VENV (default
/tmp/veil-basket-rules-reference-venv) and gets mlxtend, pandas and numpy
from PyPI at the pinned versions below.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

PINNED = ["mlxtend==0.23.4", "pandas==2.2.3", "numpy==2.4.6"]
VENV = Path(os.environ.get("VEIL_BASKET_RULES_VENV", "/tmp/veil-basket-rules-reference-venv"))
HERE = Path(__file__).resolve().parent
MIN_SUPPORT = 0.05
MAX_LEN = 3
MIN_CONFIDENCE = 0.3


def ensure_venv(script=__file__):
    """Re-runs `script` inside the pinned virtual environment."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINNED], check=True)
    os.execv(str(python), [str(python), script, *sys.argv[1:]])


def read_baskets(path):
    """Baskets in file order as lists of item labels."""
    baskets = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            baskets.setdefault(row["basket"], []).append(row["item"])
    return list(baskets.values())


def one_hot(baskets):
    import pandas as pd

    items = sorted({item for basket in baskets for item in basket})
    rows = [[item in set(basket) for item in items] for basket in baskets]
    return pd.DataFrame(rows, columns=items)


def label(itemset):
    return "|".join(sorted(itemset))


def main():
    ensure_venv()
    from mlxtend.frequent_patterns import apriori, association_rules

    baskets = read_baskets(HERE / "baskets.csv")
    frame = one_hot(baskets)
    frequent = apriori(frame, min_support=MIN_SUPPORT, use_colnames=True, max_len=MAX_LEN)
    rules = association_rules(
        frequent, num_itemsets=len(frame), metric="confidence", min_threshold=MIN_CONFIDENCE
    )
    with open(HERE / "mlxtend_itemsets.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["itemset", "support"])
        for row in sorted(
            frequent.itertuples(), key=lambda row: (len(row.itemsets), sorted(row.itemsets))
        ):
            writer.writerow([label(row.itemsets), repr(float(row.support))])
    with open(HERE / "mlxtend_rules.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["antecedent", "consequent", "support", "confidence", "lift"])
        for row in sorted(
            rules.itertuples(index=False),
            key=lambda row: (label(row.antecedents), label(row.consequents)),
        ):
            writer.writerow(
                [
                    label(row.antecedents),
                    label(row.consequents),
                    repr(float(row.support)),
                    repr(float(row.confidence)),
                    repr(float(row.lift)),
                ]
            )
    print(f"{len(frequent)} itemsets, {len(rules)} rules from {len(baskets)} baskets")


if __name__ == "__main__":
    main()
