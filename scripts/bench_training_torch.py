"""PyTorch CPU baseline for Veil's local-training benchmark (crates/models/benches/training.rs).

Same data sizes, models, loss, optimiser, batch sizes and epoch structure as the Rust bench:
100k rows x 10 features, logistic regression and MLP(64, 32) with ReLU, binary cross-entropy on
logits, Adam (lr 1e-3), one epoch with a fresh shuffle copied into contiguous memory, best of
N timed runs after one warm-up. Prints one RESULT line per case.
"""
import os
import time

import torch

N_ROWS = 100_000
N_FEATURES = 10


def make_model(name):
    if name == "logistic":
        return torch.nn.Linear(N_FEATURES, 1)
    return torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 1),
    )


def one_epoch(model, features, labels, batch_size):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_function = torch.nn.BCEWithLogitsLoss()
    order = torch.randperm(N_ROWS)
    features = features[order].contiguous()
    labels = labels[order].contiguous()
    total = 0.0
    for start in range(0, N_ROWS, batch_size):
        batch_features = features[start : start + batch_size]
        batch_labels = labels[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(batch_features), batch_labels)
        loss.backward()
        optimizer.step()
        # The Rust side reads each batch loss back for the mean training loss; do the same.
        total += loss.item() * batch_features.shape[0]
    return total / N_ROWS


def main():
    # Two threads, as the brief fixes; VEIL_TORCH_THREADS overrides it for a contention check.
    torch.set_num_threads(int(os.environ.get("VEIL_TORCH_THREADS", "2")))
    torch.manual_seed(0)
    repeats = int(os.environ.get("VEIL_BENCH_REPEATS", "3"))
    features = torch.rand(N_ROWS, N_FEATURES) * 2.0 - 1.0
    labels = (features[:, :3].sum(dim=1, keepdim=True) > 0).float()
    for name in ["logistic", "mlp64x32"]:
        for batch_size in [256, 1024]:
            best = float("inf")
            for run in range(repeats + 1):
                model = make_model(name)
                started = time.perf_counter()
                one_epoch(model, features, labels, batch_size)
                seconds = time.perf_counter() - started
                if run > 0:
                    best = min(best, seconds)
            print(
                f"RESULT framework=torch model={name} batch={batch_size} "
                f"rows_per_second={N_ROWS / best:.0f} seconds={best:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
