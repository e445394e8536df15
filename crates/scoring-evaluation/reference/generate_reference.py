#!/usr/bin/env python3
"""Reference table for veil-scoring-evaluation: scikit-learn's binary metrics.

Writes sklearn_reference.json beside this file. Each case holds the raw scores
and labels it was computed from, so the Rust test (tests/sklearn_reference.rs)
builds its own score histograms from the same rows, and scikit-learn's answers:

  roc_auc_score             sklearn.metrics.roc_auc_score
  roc_curve                 sklearn.metrics.roc_curve(drop_intermediate=False)
                            (midpoints case only)
  precision_recall_curve    sklearn.metrics.precision_recall_curve
                            (midpoints case only)
  average_precision         sklearn.metrics.average_precision_score
  brier_score_loss          sklearn.metrics.brier_score_loss
  calibration_curve         sklearn.calibration.calibration_curve(n_bins=20,
                            strategy="uniform"), the released histogram's 20
                            buckets of width 0.05

Cases:
  midpoints   scores sit on the midpoints of the 20 released buckets, so the
              histogram loses nothing and every metric must agree to rounding.
  continuous  scores are continuous; the histogram path must agree to its
              resolution (the Rust test states the bound per metric).
  rare        1.5% positives, continuous: the top-k and precision metrics a
              marketer reads on a rare outcome.

Usage (from anywhere; it makes its own virtual environment):

    python3 crates/scoring-evaluation/reference/generate_reference.py

The environment lives in $VEIL_EVALUATION_VENV (default
/tmp/veil-scoring-evaluation-reference-venv) and gets numpy and scikit-learn
from PyPI at the pinned versions below.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

VENV = Path(os.environ.get("VEIL_EVALUATION_VENV", "/tmp/veil-scoring-evaluation-reference-venv"))
PINNED = ["numpy==2.2.6", "scikit-learn==1.6.1"]
BUCKETS = 20
HERE = Path(__file__).resolve().parent


def ensure_venv():
    """Re-executes this script inside its own venv with the pinned packages."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PINNED], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def scores_and_labels(rng, n, positive_rate, separation):
    """Labels with the given base rate; scores a logistic of a shifted normal."""
    import numpy as np

    labels = (rng.random(n) < positive_rate).astype(int)
    logits = rng.normal(0.0, 1.0, n) + separation * labels - 1.0
    # Five decimals keep the table small; scikit-learn sees the same rounded scores.
    scores = np.round(1.0 / (1.0 + np.exp(-logits)), 5)
    # A score on an inner bucket edge goes to the bucket above in Veil (as in
    # EvalStats) and to the bin below in calibration_curve (np.searchsorted):
    # the conventions differ only there, so no score is left on an edge.
    on_edge = np.isclose(scores * BUCKETS, np.round(scores * BUCKETS), rtol=0.0, atol=1e-9)
    scores = np.where(on_edge, scores + 1e-5, scores)
    return scores, labels


def case(name, scores, labels, curves):
    import numpy as np
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    fpr, tpr, roc_thresholds = roc_curve(labels, scores, drop_intermediate=False)
    precision, recall, pr_thresholds = precision_recall_curve(labels, scores)
    prob_true, prob_pred = calibration_curve(labels, scores, n_bins=BUCKETS, strategy="uniform")
    finite = np.isfinite(roc_thresholds)
    result = {
        "name": name,
        "scores": [float(s) for s in scores],
        "labels": [int(y) for y in labels],
        "roc_auc_score": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "brier_score_loss": float(brier_score_loss(labels, scores)),
        "calibration_curve": {
            "prob_true": [float(x) for x in prob_true],
            "prob_pred": [float(x) for x in prob_pred],
        },
    }
    if not curves:
        return result
    result["roc_curve"] = {
            # sklearn's first threshold is +inf (nothing predicted positive):
            # JSON has no infinity, so that point is written with threshold 2.
            "thresholds": [float(t) if f else 2.0 for t, f in zip(roc_thresholds, finite)],
            "false_positive_rate": [float(x) for x in fpr],
            "true_positive_rate": [float(x) for x in tpr],
    }
    result["precision_recall_curve"] = {
            "thresholds": [float(t) for t in pr_thresholds],
            # sklearn appends (precision 1, recall 0) with no threshold: dropped here.
            "precision": [float(x) for x in precision[:-1]],
            "recall": [float(x) for x in recall[:-1]],
    }
    return result


def main():
    ensure_venv()
    import numpy as np
    import sklearn

    rng = np.random.default_rng(20261205)
    cases = []
    scores, labels = scores_and_labels(rng, 2000, 0.3, 1.5)
    bucket = np.minimum((scores * BUCKETS).astype(int), BUCKETS - 1)
    cases.append(case("midpoints", (bucket + 0.5) / BUCKETS, labels, curves=True))
    scores, labels = scores_and_labels(rng, 2000, 0.3, 1.5)
    cases.append(case("continuous", scores, labels, curves=False))
    scores, labels = scores_and_labels(rng, 3000, 0.015, 2.0)
    cases.append(case("rare", scores, labels, curves=False))
    out = {
        "generator": "crates/scoring-evaluation/reference/generate_reference.py",
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "buckets": BUCKETS,
        "cases": cases,
    }
    path = HERE / "sklearn_reference.json"
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
