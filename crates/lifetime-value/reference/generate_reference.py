#!/usr/bin/env python3
"""Reference table of `lifetimes` 0.11.3 fits for veil-lifetime-value.

Reads the checked-in `transactions.csv` (written by
`cargo run --release -p veil-lifetime-value --example reference_data -- reference transactions.csv`),
summarises it with `summary_data_from_transaction_data(freq="D")`, fits
BetaGeoFitter and GammaGammaFitter (penalizer 0, at the tightest tolerance from
1e-12 up that scipy's BFGS converges at, so the parameters are at the optimum),
and writes

* `lifetimes_parameters.csv`: model, parameter, value (and a new customer's
  expected purchases in 30, 365 and 3,650 days);
* `lifetimes_predictions.csv`: per customer, the summary and the predictions
  (expected purchases in 90 days, P(alive), expected average spend, CLV over
  12 months of 30 days at 1% a month).

`tests/reference.rs` checks Veil against both, with no Python at test time.

`--bench N` instead times lifetimes fitting N pooled customers of 10 non-IID
partners: it runs the Rust example (which times Veil's summaries, histogram and
fits on the same data and writes the pooled summaries), then fits lifetimes on
those summaries (one BetaGeoFitter and one GammaGammaFitter fit at lifetimes'
default tolerance, as a user runs them), so both figures come from one run.

The script makes its own virtual environment next to itself (`.venv`, ignored
by git) with versions that lifetimes 0.11.3 still works with, and re-runs
itself inside it.
"""

import argparse
import contextlib
import io
import os
import subprocess
import sys
import time
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
# lifetimes 0.11.3 (2020) predates pandas 2 and numpy 2; these are the newest
# releases with Python 3.11 wheels it runs on unchanged.
REQUIREMENTS = [
    "numpy==1.26.4",
    "pandas==1.5.3",
    "scipy==1.11.4",
    "autograd==1.6.2",
    "dill==0.3.8",
    "lifetimes==0.11.3",
]
HORIZON_DAYS = 90
NEW_CUSTOMER_HORIZONS_DAYS = [30, 365, 3650]
CLV_MONTHS = 12
MONTHLY_DISCOUNT_RATE = 0.01
FIT_TOLERANCES = [1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7]
# Last day of the reference window, as days since 1970-01-01 (2020-12-30);
# must match LAST_DAY in examples/reference_data.rs.
LAST_DAY = 18_262 + 364


def in_venv():
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def ensure_venv():
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        venv.create(VENV, with_pip=True)
        subprocess.check_call([python, "-m", "pip", "install", "--quiet", *REQUIREMENTS])
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def tightest_fit(make_fitter, *columns):
    """Fits at the tightest tolerance scipy's BFGS reports success for.

    Below some tolerance BFGS stops with "precision loss" and lifetimes raises
    ConvergenceError although it is at the optimum; the default 1e-7 can stop
    short of it (on the reference data by 2e-8 relative in r).
    """
    from lifetimes.utils import ConvergenceError

    for tolerance in FIT_TOLERANCES:
        fitter = make_fitter()
        try:
            # lifetimes prints scipy's whole result before raising; keep it quiet.
            with contextlib.redirect_stdout(io.StringIO()):
                fitter.fit(*columns, tol=tolerance)
        except ConvergenceError:
            continue
        print(f"{type(fitter).__name__}: converged at tol {tolerance}", file=sys.stderr)
        return fitter
    raise RuntimeError(f"{make_fitter} did not converge at any of {FIT_TOLERANCES}")


def fit(summary):
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    purchases = tightest_fit(
        lambda: BetaGeoFitter(penalizer_coef=0.0),
        summary["frequency"],
        summary["recency"],
        summary["T"],
    )
    returning = summary[summary["frequency"] > 0]
    spend = tightest_fit(
        lambda: GammaGammaFitter(penalizer_coef=0.0),
        returning["frequency"],
        returning["monetary_value"],
    )
    return purchases, spend


def reference():
    import pandas as pd
    from lifetimes.utils import summary_data_from_transaction_data

    transactions = pd.read_csv(os.path.join(HERE, "transactions.csv"))
    transactions["date"] = pd.to_datetime(transactions["day"], unit="D")
    summary = summary_data_from_transaction_data(
        transactions,
        "customer",
        "date",
        monetary_value_col="amount",
        observation_period_end=pd.to_datetime(LAST_DAY, unit="D"),
        freq="D",
    )
    purchases, spend = fit(summary)
    with open(os.path.join(HERE, "lifetimes_parameters.csv"), "w") as out:
        out.write("model,parameter,value\n")
        for name in ["r", "alpha", "a", "b"]:
            out.write(f"bg_nbd,{name},{purchases.params_[name]!r}\n")
        for name in ["p", "q", "v"]:
            out.write(f"gamma_gamma,{name},{spend.params_[name]!r}\n")
        # A new customer's expected purchases (no history), at a few horizons.
        for days in NEW_CUSTOMER_HORIZONS_DAYS:
            expected = purchases.expected_number_of_purchases_up_to_time(days)
            out.write(f"new_customer_expected_purchases,{days},{float(expected)!r}\n")

    frequency, recency, age = summary["frequency"], summary["recency"], summary["T"]
    predictions = pd.DataFrame(
        {
            "customer": summary.index,
            "frequency": frequency.astype(int).values,
            "recency": recency.astype(int).values,
            "T": age.astype(int).values,
            "monetary_value": summary["monetary_value"].values,
            "expected_purchases_90d": purchases.conditional_expected_number_of_purchases_up_to_time(
                HORIZON_DAYS, frequency, recency, age
            ).values,
            "probability_alive": purchases.conditional_probability_alive(frequency, recency, age),
            "expected_average_spend": spend.conditional_expected_average_profit(
                frequency, summary["monetary_value"]
            ).values,
            "clv_12_months": spend.customer_lifetime_value(
                purchases,
                frequency,
                recency,
                age,
                summary["monetary_value"],
                time=CLV_MONTHS,
                discount_rate=MONTHLY_DISCOUNT_RATE,
                freq="D",
            ).values,
        }
    )
    predictions.to_csv(
        os.path.join(HERE, "lifetimes_predictions.csv"), index=False, float_format="%.17g"
    )
    print(purchases.params_.to_dict(), spend.params_.to_dict())


def bench(customers):
    import pandas as pd

    crate = os.path.dirname(HERE)
    pooled = os.path.join(HERE, ".venv", f"bench_{customers}.csv")
    subprocess.check_call(
        [
            "cargo", "run", "--quiet", "--release", "-p", "veil-lifetime-value",
            "--example", "reference_data", "--", "bench", str(customers), pooled,
        ],
        cwd=crate,
    )
    summary = pd.read_csv(pooled)
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    # One fit each at lifetimes' default tolerance (1e-7), as a user runs it.
    started = time.perf_counter()
    purchases = BetaGeoFitter(penalizer_coef=0.0).fit(
        summary["frequency"], summary["recency"], summary["T"]
    )
    returning = summary[summary["frequency"] > 0]
    spend = GammaGammaFitter(penalizer_coef=0.0).fit(
        returning["frequency"], returning["monetary_value"]
    )
    elapsed = time.perf_counter() - started
    print(
        f"lifetimes: {len(summary)} customers: BetaGeoFitter + GammaGammaFitter fit "
        f"(default tolerance) {elapsed:.3f} s"
    )
    print("lifetimes fit:", purchases.params_.to_dict(), spend.params_.to_dict())


def main():
    if not in_venv():
        ensure_venv()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=int, metavar="N", help="time lifetimes on N pooled customers")
    arguments = parser.parse_args()
    if arguments.bench:
        bench(arguments.bench)
    else:
        reference()


if __name__ == "__main__":
    main()
