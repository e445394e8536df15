#!/usr/bin/env python3
"""Central and federated DP k-means references for Veil's federated DP segmentation.

Creates its own venv (next to this file), pip installs diffprivlib (IBM),
scikit-learn and numpy, and, on the pooled datasets the Rust example
`compare_ratios` writes as CSV, runs diffprivlib's `KMeans` (central DP: a
trusted curator sees every customer, a stronger trust model than Veil's) at
epsilon in {0.5, 1, 2} and prints its k-means cost ratio to scikit-learn's
`KMeans` (k-means++, best of 10), next to Veil's ratio to the same
denominator from the centroids the example wrote. With `--dpfknn-source` it
also runs `dpfknn`, the packaged FastLloyd, Veil's direct federated peer,
against the same denominator.

    python3 crates/segmentation/reference/compare_diffprivlib.py [CSV_DIR] [--dpfknn-source PATH]

Without CSV_DIR it runs `cargo run --release -p veil-segmentation --example
compare_ratios -- target/segment-compare` first, which also prints Veil's
ratios on the same data. The table is written to diffprivlib_ratios.csv here;
its `dpfknn_cost_ratio` column says "not run" without `--dpfknn-source`.

Every ratio is the k-means cost (sum of squared distances to the nearest
centroid) of the method's centroids on the original pooled points, divided by
the cost of scikit-learn's best-of-10 k-means++, averaged over 3 runs.

# dpfknn: where it comes from

`dpfknn` is not on PyPI (it answers 404). It is
github.com/Bowenislandsong/Differentially-Private-Federated-KNN (version
0.1.0; the checked-in table used commit 3c2bdcdfb154, 2025-12-09), a
packaging of github.com/D-Diaa/FastLloyd. Clone it anywhere outside this
repository and pass the checkout:

    git clone https://github.com/Bowenislandsong/Differentially-Private-Federated-KNN /tmp/dpfknn-src
    python3 crates/segmentation/reference/compare_diffprivlib.py --dpfknn-source /tmp/dpfknn-src

The script pip installs the checkout into its venv (its dependencies numpy,
scikit-learn, scipy, diffprivlib and tqdm come from PyPI) and prints the
version and commit it ran.

# dpfknn: trust model

FastLloyd is federated like Veil, so it is the direct peer (diffprivlib is
central). Each client (here: each partner) assigns its own points to the
public centroids and sends per-cluster fixed-point sums and counts under
additive masks that cancel in the total (masked secure aggregation). The
server adds central Gaussian noise to the masked total, without seeing
the total, and every client unmasks the noised total and moves the
centroids. So nobody sees a noise-free aggregate, as in Veil, but the server
is trusted to add the noise, must not collude with any client (in dpfknn
every client derives every client's mask from one shared seed), and no
client may drop out (the masks cancel only if every client reports). Veil instead has each node add its share of a
distributed discrete Gaussian before masking, tolerates dropouts down to
`min_survivors` nodes and trusts no one to add noise. That costs Veil
utility that dpfknn does not pay; see the fairness notes below.

# dpfknn: how it is run here, and why

* **Not through its estimator.** `DPFederatedKMeans.fit` (0.1.0) splits the
  pooled data among clients at random, normalises it by the data's own min
  and max (not DP: that leaks the extremes), and returns centroids that are
  neither mapped back to the data's scale nor correct (it divides the
  already unscaled centroids by 2^16 again). The script calls the protocol itself, `dpfknn.local_proto`
  with `dpfknn.Params`, in its masked mode.
* **One client per partner.** The points are split by the CSV's partner
  column, so the clients hold Veil's skewed partner data, not a random split.
* **Public normalisation.** FastLloyd assumes data in [-1, 1]^d. Points are
  divided by Veil's public BOUND = 3 (Veil's box [-3, 3]^d; clipped to it,
  as Veil clamps), and dpfknn's centroids are multiplied by BOUND before the
  cost is computed on the original pooled points.
* **Fixed-point fix.** dpfknn 0.1.0 changed FastLloyd's `to_fixed` and
  `to_int` to reduce modulo 2^31 into non-negative numbers, and nothing
  reduces the unmasked sums back, so every negative coordinate, offset and
  noise draw comes back as about +32768 (and a negative count noise as about
  +2^31). The script replaces those two functions in dpfknn's modules with
  upstream FastLloyd's (`data_io/fixed.py`: multiply by 2^16 and cast to
  int32) when it finds the bug; it changes nothing else.
* **FastLloyd's own settings.** Upstream FastLloyd's experiments default to
  the radius-constrained relative update (`method="diagonal_then_frac"`,
  `alpha=0.8`), folding centroids back into the box (`post="fold"`) and the
  analytic Gaussian mechanism (`dp="gaussiananalytic"`); the script uses
  those. Centroids start at FastLloyd's data-independent random points in the box,
  which costs no budget.
* **Iterations.** 5, Veil's number of Lloyd steps (`recommended()`).
  FastLloyd's own heuristic (`Params.calculate_iters`, between 2 and 7)
  would pick the number the script prints; upstream runs that.

# dpfknn: what epsilon means, and the mapping

Veil's epsilon is per partner, customer-level (add or remove one customer),
for the whole job: one seeding release, 5 Lloyd steps and one profile
release, composed by the RDP accountant at delta = 1e-6. dpfknn's `eps` also
covers the whole run at record level (here each row is one customer, so
record level is customer level): the server calibrates the analytic Gaussian
for (eps, delta) at sensitivity 1 and multiplies each release's noise by
sqrt(iterations) and by a sum/count split factor chosen so that the sum and
count releases of all iterations compose (as Gaussians, exactly) to that one
(eps, delta) Gaussian. Its "default privacy budget split" is that factor:
for the radius-constrained method the sum releases get the share
sqrt(4d) / (1 + sqrt(4d)) of the budget in units of 1/sigma^2 (0.83 for
d = 6) and the count releases the rest. So the same epsilon is passed through unchanged. dpfknn's delta is
1 / (N ln N) with N its `data_size` parameter (3.2e-6 for N = 30,000); the
script sets `data_size` to the N that makes this Veil's 1e-6, which changes
nothing else because `data_size` is read only there and in the iteration
heuristic the script does not use.

What is still not equal, all in dpfknn's favour: one central Gaussian
instead of Veil's distributed discrete Gaussian (whose sensitivity bound
carries a sqrt(dimension) rounding term), exact Gaussian composition instead
of Veil's RDP accounting, the whole budget on the Lloyd steps instead of
sharing it with a seeding histogram and a profile, and no allowance for the
fixed-point rounding of client sums. dpfknn seeds its noise generator with
`seed * iteration`, so the first iteration's noise is the same draw in
every run; its 3 runs differ in their random starting centroids and in the
later draws.
"""

import argparse
import importlib
import math
import os
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv")
PYTHON = os.path.join(VENV, "bin", "python")
# diffprivlib 0.6.6 imports sklearn.tree._tree.DOUBLE, which scikit-learn 1.7+ removed.
REQUIREMENTS = ["diffprivlib==0.6.6", "scikit-learn==1.5.2", "numpy"]
RUNS = 3
BOUND = 3.0  # Veil's public box [-B, B]^d, given to diffprivlib as its bounds.
EPSILONS = (0.5, 1.0, 2.0)
# Veil's delta (`compare_ratios.rs`), matched in dpfknn through its data_size.
DELTA = 1e-6
# Veil's Lloyd steps in `SegmentationConfig::recommended`.
DPFKNN_ITERATIONS = 5
# Upstream FastLloyd's experiment defaults (experiments.py `parse_args`).
DPFKNN_METHOD = "diagonal_then_frac"
DPFKNN_ALPHA = 0.8
DPFKNN_POST = "fold"
DPFKNN_MECHANISM = "gaussiananalytic"
# dpfknn seeds run `seed`'s noise at iteration i with `seed * i`: distinct
# primes keep the runs' later draws distinct (seed 0 would repeat one draw).
DPFKNN_SEEDS = (1009, 2003, 3001)


def ensure_venv():
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(PYTHON):
        venv.create(VENV, with_pip=True)
        subprocess.check_call([PYTHON, "-m", "pip", "install", "-q", *REQUIREMENTS])
    os.execv(PYTHON, [PYTHON, *sys.argv])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv_dir", nargs="?",
                        help="CSVs from `compare_ratios`; without it the example is run first")
    parser.add_argument("--dpfknn-source", metavar="PATH",
                        help="a local checkout of dpfknn (not on PyPI) to install and compare")
    return parser.parse_args()


def install_dpfknn(source):
    """Installs the checkout into this venv and says which version and commit ran."""
    source = os.path.abspath(source)
    # pip rebuilds and reinstalls a local directory every time, so a changed
    # checkout replaces the installed copy even with the same version number.
    subprocess.check_call([PYTHON, "-m", "pip", "install", "-q", source])
    importlib.invalidate_caches()
    commit = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"],
                            capture_output=True, text=True)
    commit_id = commit.stdout.strip() if commit.returncode == 0 else "unknown (not a git checkout)"
    import dpfknn
    print(f"# dpfknn {dpfknn.__version__} from {source}, commit {commit_id}")
    return dpfknn


def upstream_fixed_point(np, dpfknn_modules):
    """Puts upstream FastLloyd's signed fixed point back where dpfknn 0.1.0 broke it.

    Returns `to_fixed`, for the clients' data.
    """
    from dpfknn.data_io import fixed

    def to_int(values):
        return np.asarray(values).astype(np.int32)

    def to_fixed(values):
        return to_int(np.asarray(values) * fixed.SCALE)

    if fixed.to_fixed(np.array([-0.5]))[0] == to_fixed(np.array([-0.5]))[0]:
        return fixed.to_fixed
    print("# dpfknn: to_fixed/to_int wrap negatives to large positives; "
          "using upstream FastLloyd's signed int32 fixed point")
    originals = {"to_fixed": (fixed.to_fixed, to_fixed), "to_int": (fixed.to_int, to_int)}
    for module in dpfknn_modules:
        for name, (original, replacement) in originals.items():
            if getattr(module, name, None) is original:
                setattr(module, name, replacement)
    return to_fixed


def data_size_for_delta(delta):
    """The N with 1 / (N ln N) = delta: dpfknn's delta for data_size N."""
    low, high = 3.0, 1e15
    for _ in range(200):
        middle = math.sqrt(low * high)
        if middle * math.log(middle) < 1.0 / delta:
            low = middle
        else:
            high = middle
    return high


def main():
    args = parse_args()
    ensure_venv()
    import numpy as np
    from diffprivlib.models import KMeans as DpKMeans
    from sklearn.cluster import KMeans

    repo = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
    csv_dir = args.csv_dir or os.path.join(repo, "target", "segment-compare")
    if args.csv_dir is None:
        subprocess.check_call(
            ["cargo", "run", "--release", "-p", "veil-segmentation", "--example",
             "compare_ratios", "--", csv_dir],
            cwd=repo,
        )

    dpfknn = None
    if args.dpfknn_source:
        # local_proto shows a tqdm progress bar per run; the table is the output.
        os.environ.setdefault("TQDM_DISABLE", "1")
        dpfknn = install_dpfknn(args.dpfknn_source)
        to_fixed = upstream_fixed_point(
            np, [module for name, module in sys.modules.items()
                 if name == "dpfknn" or name.startswith("dpfknn.")])
        dpfknn_data_size = data_size_for_delta(DELTA)
    else:
        print("# dpfknn not run: it is not on PyPI; pass --dpfknn-source PATH (see the docstring)")

    def cost(points, centres):
        distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        return distances.min(axis=1).sum()

    def dpfknn_centres(partner_points, k, epsilon, seed):
        params = dpfknn.Params(
            seed=seed, data_size=dpfknn_data_size, dim=partner_points[0].shape[1], k=k,
            iters=DPFKNN_ITERATIONS, alpha=DPFKNN_ALPHA, num_clients=len(partner_points),
            eps=epsilon, dp=DPFKNN_MECHANISM, method=DPFKNN_METHOD, post=DPFKNN_POST,
            fixed=True,
        )
        value_lists = [to_fixed(np.clip(points / BOUND, -1.0, 1.0)) for points in partner_points]
        centres, _unassigned = dpfknn.local_proto(value_lists, params, method="masked")
        return centres * BOUND

    def dpfknn_heuristic_iterations(n_points, dim, k, epsilon):
        params = dpfknn.Params(data_size=n_points, dim=dim, k=k, alpha=DPFKNN_ALPHA,
                               eps=epsilon, dp=DPFKNN_MECHANISM, method=DPFKNN_METHOD)
        params.calculate_iters()
        return params.iters

    rows = ["partners,k,epsilon,diffprivlib_cost_ratio,veil_cost_ratio,dpfknn_cost_ratio"]
    print(rows[0])
    for partners in (3, 10):
        for k in (4, 8):
            data = np.loadtxt(os.path.join(csv_dir, f"pooled_p{partners}_k{k}.csv"),
                              delimiter=",", skiprows=1)
            points = data[:, 1:]
            partner_ids = data[:, 0].astype(int)
            partner_points = [points[partner_ids == partner] for partner in np.unique(partner_ids)]
            central = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=0).fit(points)
            central_cost = cost(points, central.cluster_centers_)
            bounds = (np.full(points.shape[1], -BOUND), np.full(points.shape[1], BOUND))
            for epsilon in EPSILONS:
                ratios = []
                for run in range(RUNS):
                    model = DpKMeans(n_clusters=k, epsilon=epsilon, bounds=bounds,
                                     random_state=run).fit(points)
                    ratios.append(cost(points, model.cluster_centers_) / central_cost)
                veil = []
                for run in range(RUNS):
                    path = os.path.join(
                        csv_dir, f"veil_centroids_p{partners}_k{k}_e{epsilon:g}_r{run}.csv")
                    if os.path.exists(path):
                        centres = np.loadtxt(path, delimiter=",", ndmin=2)
                        veil.append(cost(points, centres) / central_cost)
                veil_cell = f"{np.mean(veil):.4f}" if veil else "missing"
                dpfknn_cell = "not run"
                if dpfknn is not None:
                    dpfknn_ratios = [
                        cost(points, dpfknn_centres(partner_points, k, epsilon, seed))
                        / central_cost
                        for seed in DPFKNN_SEEDS
                    ]
                    dpfknn_cell = f"{np.mean(dpfknn_ratios):.4f}"
                    heuristic = dpfknn_heuristic_iterations(len(points), points.shape[1], k,
                                                            epsilon)
                    print(f"# dpfknn p{partners} k{k} eps {epsilon}: runs "
                          + ", ".join(f"{ratio:.4f}" for ratio in dpfknn_ratios)
                          + f"; its own heuristic would run {heuristic} iterations, "
                          f"not {DPFKNN_ITERATIONS}")
                row = f"{partners},{k},{epsilon},{np.mean(ratios):.4f},{veil_cell},{dpfknn_cell}"
                rows.append(row)
                print(row, flush=True)
    with open(os.path.join(HERE, "diffprivlib_ratios.csv"), "w") as table:
        table.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
