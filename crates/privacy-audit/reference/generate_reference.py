#!/usr/bin/env python3
"""Reference table for veil-privacy-audit: one-run lower bounds on epsilon.

Writes one_run_reference.csv beside this file, one row per (m, r, v, delta,
confidence) on a fixed grid, with columns

  eps_lower             Steinke, Nasr, Jagielski (NeurIPS 2023), Theorem 1:
                        the p-value of their Appendix D (`p_value_DP_audit`),
                        bisected until the bracket is below 1e-12.
  eps_lower_appendix_d  The same p-value with Appendix D's search exactly as
                        published (`get_eps_audit`: eps_max grows by 1, then
                        30 halvings, returning the lower end).
  mu_lower_gdp          Mahloujifar, Melis, Chaudhuri (ICML 2025), Gaussian
                        f-DP: the largest mu for which mu-GDP is rejected by
                        their recursion (`audit_rh_with_cap`), bisected to 1e-12.
  eps_lower_gdp         That mu converted to epsilon at delta with Dong, Roth
                        and Su's Corollary 2.13 (empty when delta = 0).
  jax_eps_lower         DeepMind's jax_privacy 2.0.0 (PyPI)
  jax_eps_lower_gdp     `auditing._epsilon_one_run` and `_epsilon_one_run_fdp`
                        on the same inputs: the institution's published code for
                        both bounds, an independent check on this script. Their
                        root finder stops at xtol = 1e-6.

Everything here is written from the papers' formulas, independently of the
Rust crate: scipy's binomial (Boost's incomplete beta) rather than log-space
sums, Python's AS241 normal quantile rather than Acklam + Halley, and its own
bisections. The Rust test reference_table.rs compares every row.

Usage (from anywhere; it makes its own virtual environment):

    python3 crates/privacy-audit/reference/generate_reference.py

The environment lives in $VEIL_AUDIT_VENV (default
/tmp/veil-privacy-audit-reference-venv) and gets numpy, scipy and jax-privacy
from PyPI at the pinned versions below. Takes a few minutes on two cores.
"""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

PINNED = ["numpy==2.4.6", "scipy==1.17.1", "jax-privacy==2.0.0", "jax==0.10.2", "jaxlib==0.10.2"]
VENV = Path(os.environ.get("VEIL_AUDIT_VENV", "/tmp/veil-privacy-audit-reference-venv"))
OUTPUT = Path(__file__).resolve().parent / "one_run_reference.csv"

# The grid: canaries m, guesses r as fractions of m, correct v as fractions of
# r, and the (delta, confidence) levels an audit would use.
CANARIES = [100, 1000, 10_000, 100_000]
GUESS_FRACTIONS = [0.01, 0.1, 0.5, 1.0]
CORRECT_FRACTIONS = [0.5, 0.6, 0.75, 0.9, 0.99, 1.0]
DELTAS = [0.0, 1e-6, 1e-5]
CONFIDENCES = [0.95, 0.99]
# The f-DP recursion runs v steps per test in pure Python; above this many
# correct guesses the column is left empty to keep the run to minutes.
GDP_MAX_CORRECT = 20_000
# jax_privacy's recursion calls scipy per step (~50 us), so its cross-check
# column stops sooner.
JAX_GDP_MAX_CORRECT = 2_000


def ensure_environment():
    """Re-executes this script inside its own venv with the pinned packages."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PINNED], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


def steinke_p_value(m, r, v, eps, delta):
    """Theorem 1's bound on P[W >= v] under (eps, delta)-DP, capped at 1.

    f(k) = P[Binomial(r, q) >= k], q = e^eps / (1 + e^eps);
    p = f(v) + 2 m delta max_{i >= 1} (f(v - i) - f(v)) / i.
    For i > v the ratio is (1 - f(v)) / i, below its value at i = v.
    """
    import numpy as np
    from scipy import stats

    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # k = v-1, v-2, ..., 0
    windows = np.cumsum(below) / np.arange(1, v + 1)
    return min(tail + 2.0 * m * delta * float(windows.max()), 1.0)


def largest_rejected(rejects, tolerance=1e-12, ceiling=1024.0):
    """Largest x with rejects(x), for rejects true below a point and false above."""
    low, high = 0.0, 1.0
    while rejects(high):
        low, high = high, 2.0 * high
        if high > ceiling:
            return low
    while high - low > tolerance * max(high, 1.0):
        middle = 0.5 * (low + high)
        if middle <= low or middle >= high:
            break
        if rejects(middle):
            low = middle
        else:
            high = middle
    return low


def eps_lower(m, r, v, delta, confidence):
    significance = 1.0 - confidence
    return largest_rejected(lambda eps: steinke_p_value(m, r, v, eps, delta) < significance)


def eps_lower_appendix_d(m, r, v, delta, confidence):
    """Appendix D's search as published: grow by 1, then 30 halvings."""
    significance = 1.0 - confidence
    low, high = 0.0, 1.0
    while steinke_p_value(m, r, v, high, delta) < significance:
        high += 1.0
    for _ in range(30):
        middle = (low + high) / 2.0
        if steinke_p_value(m, r, v, middle, delta) < significance:
            low = middle
        else:
            high = middle
    return low


_NORMAL = None


def normal():
    global _NORMAL
    if _NORMAL is None:
        from statistics import NormalDist

        _NORMAL = NormalDist()
    return _NORMAL


def normal_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gdp_rejects(m, r, v, mu, significance):
    """Mahloujifar et al.'s recursion for the claim mu-GDP (alphabet k = 2)."""
    def inverse_blow_up(x):
        if x >= 1.0:
            return 1.0
        if x <= 0.0:
            return 0.0
        return normal_cdf(normal().inv_cdf(x) - mu)

    top = significance * v / m
    bottom = significance * (r - v) / m
    for i in range(v - 1, -1, -1):
        new_bottom = max(bottom, inverse_blow_up(top))
        if new_bottom == bottom:
            break
        top = min(top + i / (r - i) * (new_bottom - bottom), 1.0)
        bottom = new_bottom
    return top + bottom > r / m


def gdp_delta(mu, eps):
    """Dong, Roth, Su Corollary 2.13: delta(eps) of mu-GDP."""
    return normal_cdf(-eps / mu + mu / 2.0) - math.exp(eps) * normal_cdf(-eps / mu - mu / 2.0)


def gdp_epsilon(mu, delta):
    """Smallest eps >= 0 with delta(eps) <= delta, by bisection."""
    if mu <= 0.0 or gdp_delta(mu, 0.0) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while gdp_delta(mu, high) > delta:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle <= low or middle >= high:
            break
        if gdp_delta(mu, middle) > delta:
            low = middle
        else:
            high = middle
    return high


def mu_lower_gdp(m, r, v, confidence):
    significance = 1.0 - confidence
    return largest_rejected(lambda mu: gdp_rejects(m, r, v, mu, significance), ceiling=64.0)


def grid():
    for m in CANARIES:
        for guess_fraction in GUESS_FRACTIONS:
            r = max(1, round(guess_fraction * m))
            for correct_fraction in CORRECT_FRACTIONS:
                v = round(correct_fraction * r)
                for delta in DELTAS:
                    for confidence in CONFIDENCES:
                        yield m, r, v, delta, confidence


def main():
    ensure_environment()
    from jax_privacy import auditing as jax_auditing

    columns = [
        "m", "r", "v", "delta", "confidence",
        "eps_lower", "eps_lower_appendix_d", "mu_lower_gdp", "eps_lower_gdp",
        "jax_eps_lower", "jax_eps_lower_gdp",
    ]
    rows = []
    seen = set()
    for m, r, v, delta, confidence in grid():
        if (m, r, v, delta, confidence) in seen:
            continue
        seen.add((m, r, v, delta, confidence))
        significance = 1.0 - confidence
        row = {
            "m": m, "r": r, "v": v, "delta": repr(delta), "confidence": repr(confidence),
            "eps_lower": repr(eps_lower(m, r, v, delta, confidence)),
            "eps_lower_appendix_d": repr(eps_lower_appendix_d(m, r, v, delta, confidence)),
            "mu_lower_gdp": "", "eps_lower_gdp": "", "jax_eps_lower_gdp": "",
        }
        # jax_privacy refuses delta = 0 in its public API but its helper takes it.
        row["jax_eps_lower"] = repr(float(
            jax_auditing._epsilon_one_run(0.0, m, r, v, significance, delta)))
        if delta > 0 and v <= GDP_MAX_CORRECT:
            mu = mu_lower_gdp(m, r, v, confidence)
            row["mu_lower_gdp"] = repr(mu)
            row["eps_lower_gdp"] = repr(gdp_epsilon(mu, delta))
            if v <= JAX_GDP_MAX_CORRECT:
                row["jax_eps_lower_gdp"] = repr(float(
                    jax_auditing._epsilon_one_run_fdp(0.0, m, r, v, significance, delta)))
        rows.append(row)
        print(m, r, v, delta, confidence, row["eps_lower"], row["eps_lower_gdp"], flush=True)

    with OUTPUT.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    def deviation(a, b):
        pairs = [(float(row[a]), float(row[b])) for row in rows if row[a] and row[b]]
        return max(abs(x - y) for x, y in pairs), len(pairs)

    for a, b in [("eps_lower", "eps_lower_appendix_d"), ("eps_lower", "jax_eps_lower"),
                 ("eps_lower_gdp", "jax_eps_lower_gdp")]:
        worst, count = deviation(a, b)
        print(f"max |{a} - {b}| = {worst:.3e} over {count} rows")
    print(f"wrote {len(rows)} rows to {OUTPUT}")


if __name__ == "__main__":
    main()
