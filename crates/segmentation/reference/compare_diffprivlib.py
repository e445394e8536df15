#!/usr/bin/env python3
"""Central DP k-means reference for Veil's federated DP segmentation.

Creates its own venv (next to this file), pip installs diffprivlib (IBM),
scikit-learn and numpy, and, on the pooled datasets the Rust example
`compare_ratios` writes as CSV, runs diffprivlib's `KMeans` (central DP: a
trusted curator sees every customer, a stronger trust model than Veil's) at
epsilon in {0.5, 1, 2} and prints its k-means cost ratio to scikit-learn's
`KMeans` (k-means++, best of 10), next to Veil's ratio to the same
denominator from the centroids the example wrote. Also tries `dpfknn` (the FastLloyd-based
package) and says whether it installs.

    python3 crates/segmentation/reference/compare_diffprivlib.py [CSV_DIR]

Without CSV_DIR it runs `cargo run --release -p veil-segmentation --example
compare_ratios -- target/segment-compare` first, which also prints Veil's
ratios on the same data. The table is written to diffprivlib_ratios.csv here.
"""

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


def ensure_venv():
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(PYTHON):
        venv.create(VENV, with_pip=True)
        subprocess.check_call([PYTHON, "-m", "pip", "install", "-q", *REQUIREMENTS])
    os.execv(PYTHON, [PYTHON, *sys.argv])


def try_dpfknn():
    result = subprocess.run(
        [PYTHON, "-m", "pip", "install", "-q", "dpfknn"], capture_output=True, text=True
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        print(f"# dpfknn (FastLloyd) does not install here: {reason}")
        return False
    return True


def main():
    ensure_venv()
    import numpy as np
    from diffprivlib.models import KMeans as DpKMeans
    from sklearn.cluster import KMeans

    repo = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
    csv_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo, "target", "segment-compare")
    if len(sys.argv) <= 1:
        subprocess.check_call(
            ["cargo", "run", "--release", "-p", "veil-segmentation", "--example",
             "compare_ratios", "--", csv_dir],
            cwd=repo,
        )
    have_dpfknn = try_dpfknn()

    def cost(points, centres):
        distances = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        return distances.min(axis=1).sum()

    rows = ["partners,k,epsilon,diffprivlib_cost_ratio,veil_cost_ratio"]
    print(rows[0])
    for partners in (3, 10):
        for k in (4, 8):
            data = np.loadtxt(os.path.join(csv_dir, f"pooled_p{partners}_k{k}.csv"),
                              delimiter=",", skiprows=1)
            points = data[:, 1:]
            central = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=0).fit(points)
            central_cost = cost(points, central.cluster_centers_)
            bounds = (np.full(points.shape[1], -BOUND), np.full(points.shape[1], BOUND))
            for epsilon in (0.5, 1.0, 2.0):
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
                row = f"{partners},{k},{epsilon},{np.mean(ratios):.4f},{veil_cell}"
                rows.append(row)
                print(row, flush=True)
    if have_dpfknn:
        print("# dpfknn installed; its ratios are not computed by this script yet")
    with open(os.path.join(HERE, "diffprivlib_ratios.csv"), "w") as table:
        table.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
