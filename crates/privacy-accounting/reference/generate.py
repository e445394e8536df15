#!/usr/bin/env python3
"""Generates reference epsilons for veil-privacy-accounting's tests from Google's dp-accounting.

Run with a Python that has `dp-accounting` installed, e.g.:

    python3 -m venv /tmp/dpvenv && /tmp/dpvenv/bin/pip install dp-accounting==0.6.0
    /tmp/dpvenv/bin/python reference/generate.py > reference/dp_accounting_reference.json

The Rust tests read the JSON written here, so they never need Python.
"""
import json
import sys
import logging
import time

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

# (sampling_rate, noise_multiplier, steps, delta). Chosen to span q in [0.001, 1],
# sigma in [0.5, 5], steps up to 1e5 and both deltas, while keeping epsilon in the
# range where anyone would actually deploy (roughly 0.05 to 30).
CASES = [
    (0.001, 0.8, 10000, 1e-5),
    (0.001, 1.0, 100000, 1e-5),
    (0.001, 2.0, 100000, 1e-6),
    (0.001, 0.5, 1000, 1e-6),
    (0.005, 1.0, 10000, 1e-5),
    (0.01, 0.8, 1000, 1e-5),
    (0.01, 1.1, 10000, 1e-5),
    (0.01, 1.1, 10000, 1e-6),
    (0.01, 2.0, 100000, 1e-5),
    (0.01, 5.0, 100000, 1e-6),
    (0.02, 1.5, 5000, 1e-5),
    (0.02, 0.6, 200, 1e-6),
    (0.05, 1.0, 300, 1e-5),
    (0.05, 3.0, 2000, 1e-6),
    (0.1, 1.0, 100, 1e-5),
    (0.1, 3.0, 1000, 1e-5),
    (0.1, 5.0, 1000, 1e-6),
    (0.2, 1.5, 50, 1e-6),
    (0.3, 3.0, 100, 1e-5),
    (0.5, 2.0, 20, 1e-5),
    (0.5, 5.0, 100, 1e-6),
    (1.0, 0.5, 1, 1e-5),
    (1.0, 2.0, 10, 1e-5),
    (1.0, 5.0, 20, 1e-6),
]


def event_for(sampling_rate, noise_multiplier, steps):
    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(
            sampling_rate, dp_event.GaussianDpEvent(noise_multiplier)),
        steps)


def main():
    # dp-accounting warns for every fractional order it cannot sum; the warnings are
    # expected (it drops those orders) and would drown the progress lines.
    logging.getLogger("absl").setLevel(logging.ERROR)
    results = []
    for sampling_rate, noise_multiplier, steps, delta in CASES:
        started = time.perf_counter()
        pld = pld_privacy_accountant.PLDAccountant()
        pld.compose(event_for(sampling_rate, noise_multiplier, steps))
        epsilon_pld = pld.get_epsilon(delta)
        seconds = time.perf_counter() - started
        # dp-accounting's own discretisation error: connect-the-dots is second
        # order in the interval, so the change from doubling the interval is a
        # (generous) estimate of how far its 1e-4 answer sits above the truth.
        coarse = pld_privacy_accountant.PLDAccountant(
            value_discretization_interval=2e-4)
        coarse.compose(event_for(sampling_rate, noise_multiplier, steps))
        discretisation_error = abs(coarse.get_epsilon(delta) - epsilon_pld)
        rdp = rdp_privacy_accountant.RdpAccountant()
        rdp.compose(event_for(sampling_rate, noise_multiplier, steps))
        epsilon_rdp = rdp.get_epsilon(delta)
        results.append({
            "sampling_rate": sampling_rate,
            "noise_multiplier": noise_multiplier,
            "steps": steps,
            "delta": delta,
            "epsilon_pld": epsilon_pld,
            "epsilon_pld_discretisation_error": discretisation_error,
            "epsilon_rdp": epsilon_rdp,
        })
        print(f"q={sampling_rate} sigma={noise_multiplier} steps={steps} "
              f"delta={delta}: pld={epsilon_pld:.6f} "
              f"error={discretisation_error:.2e} rdp={epsilon_rdp:.6f} "
              f"({seconds:.2f}s)", file=sys.stderr)
    json.dump({
        "generator": "reference/generate.py",
        "dp_accounting_version": getattr(dp_accounting, "__version__", "0.6.0"),
        "pld_value_discretization_interval": 1e-4,
        "neighboring_relation": "ADD_OR_REMOVE_ONE",
        "cases": results,
    }, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
