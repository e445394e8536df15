"""PyTorch and Opacus baselines for Veil's DP-SGD benchmark (crates/models/benches/dp_sgd.rs).

Same data, model and settings as the Rust bench: 100k rows x 10 uniform features labelled by
the sign of the first three, MLP(64, 32) with ReLU, binary cross-entropy on logits, Adam
(lr 1e-3), one epoch. Non-private: shuffled batches of 256. DP-SGD: Opacus with Poisson sampling
at q = 256/N, noise multiplier 1.0, clip norm 1.0. Best of N timed epochs after one warm-up.
Prints one RESULT line per case.
"""
import os
import time
import warnings

import torch
from opacus import PrivacyEngine

N_ROWS = 100_000
N_FEATURES = 10
BATCH_SIZE = 256


def make_model():
    return torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 1),
    )


def non_private_epoch(features, labels):
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_function = torch.nn.BCEWithLogitsLoss()
    order = torch.randperm(N_ROWS)
    features = features[order].contiguous()
    labels = labels[order].contiguous()
    for start in range(0, N_ROWS, BATCH_SIZE):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(
            model(features[start : start + BATCH_SIZE]), labels[start : start + BATCH_SIZE]
        )
        loss.backward()
        optimizer.step()
        loss.item()


def dp_sgd_epoch(features, labels, grad_sample_mode):
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(features, labels), batch_size=BATCH_SIZE
    )
    engine = PrivacyEngine(accountant="rdp")
    loss_function = torch.nn.BCEWithLogitsLoss()
    if grad_sample_mode == "ghost":
        model, optimizer, loss_function, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            criterion=loss_function,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
            grad_sample_mode="ghost",
        )
    else:
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
        )
    for batch_features, batch_labels in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(batch_features), batch_labels)
        loss.backward()
        optimizer.step()
        loss.item()


def best_rows_per_second(run, repeats):
    best = float("inf")
    for attempt in range(repeats + 1):
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
        if attempt > 0:
            best = min(best, seconds)
    return N_ROWS / best, best


def main():
    warnings.filterwarnings("ignore")
    # Two threads, as for the other PyTorch baseline; VEIL_TORCH_THREADS overrides it.
    torch.set_num_threads(int(os.environ.get("VEIL_TORCH_THREADS", "2")))
    torch.manual_seed(0)
    repeats = int(os.environ.get("VEIL_BENCH_REPEATS", "2"))
    features = torch.rand(N_ROWS, N_FEATURES) * 2.0 - 1.0
    labels = (features[:, :3].sum(dim=1, keepdim=True) > 0).float()
    cases = [
        ("torch", "non_private", lambda: non_private_epoch(features, labels)),
        ("opacus", "dp_sgd", lambda: dp_sgd_epoch(features, labels, "hooks")),
        ("opacus", "dp_sgd_ghost", lambda: dp_sgd_epoch(features, labels, "ghost")),
    ]
    for framework, mode, run in cases:
        try:
            rows_per_second, seconds = best_rows_per_second(run, repeats)
        except Exception as error:  # An older Opacus without ghost clipping, for example.
            print(f"SKIPPED framework={framework} mode={mode} reason={type(error).__name__}: {error}")
            continue
        print(
            f"RESULT framework={framework} mode={mode} "
            f"rows_per_second={rows_per_second:.0f} seconds={seconds:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
