"""Flower's SecAgg+ and plain FedAvg on Veil's whole-round workload (issue 19).

Run by scripts/bench-secagg-flower, inside a network namespace with only
loopback up. N simulated clients each hold synthetic rows (as many as a Veil
demo partner's training split) and train an MLP of the same shape as Veil's
bench job (features -> H1 -> H2 -> 1, ReLU, sigmoid, binary cross-entropy) for
one local epoch of mini-batch SGD (batch 512), in NumPy. Each round is a fit
(plain, or Flower's SecAgg+ workflow with the given shares and threshold)
then a plain federated evaluation, as Flower's DefaultWorkflow runs them.

A round is timed in steady state as Veil's bench times it: from the end of
round 1's evaluation to the end of round 3's, divided by two. One JSON line
per run goes to standard output.
"""

import argparse
import json
import os
import resource
import time

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.simulation import run_simulation

ROUNDS = 3
BATCH = 512
LEARNING_RATE = 0.05


def shapes(features, hidden):
    sizes = [features, *hidden, 1]
    return [
        shape
        for fan_in, fan_out in zip(sizes, sizes[1:])
        for shape in ((fan_in, fan_out), (fan_out,))
    ]


def initial_parameters(features, hidden, seed=7):
    rng = np.random.default_rng(seed)
    arrays = []
    for shape in shapes(features, hidden):
        if len(shape) == 2:
            scale = np.sqrt(2.0 / shape[0])
            arrays.append((rng.standard_normal(shape) * scale).astype(np.float32))
        else:
            arrays.append(np.zeros(shape, dtype=np.float32))
    return arrays


def client_data(index, rows, features):
    rng = np.random.default_rng(1000 + index)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    w = np.linspace(-1.0, 1.0, features, dtype=np.float32)
    logits = x @ w + 0.3 * rng.standard_normal(rows).astype(np.float32)
    y = (logits > 0).astype(np.float32)
    return x, y


def forward(params, x):
    activations = [x]
    h = x
    layers = len(params) // 2
    for layer in range(layers):
        w, b = params[2 * layer], params[2 * layer + 1]
        z = h @ w + b
        h = np.maximum(z, 0.0) if layer < layers - 1 else 1.0 / (1.0 + np.exp(-z))
        activations.append(h)
    return activations


def train_epoch(params, x, y, rng):
    params = [p.copy() for p in params]
    order = rng.permutation(len(x))
    layers = len(params) // 2
    for start in range(0, len(x), BATCH):
        batch = order[start : start + BATCH]
        xb, yb = x[batch], y[batch][:, None]
        acts = forward(params, xb)
        delta = (acts[-1] - yb) / len(batch)
        for layer in reversed(range(layers)):
            grad_w = acts[layer].T @ delta
            grad_b = delta.sum(axis=0)
            if layer > 0:
                delta = (delta @ params[2 * layer].T) * (acts[layer] > 0)
            params[2 * layer] -= LEARNING_RATE * grad_w
            params[2 * layer + 1] -= LEARNING_RATE * grad_b
    return params


def evaluate(params, x, y):
    p = np.clip(forward(params, x)[-1][:, 0], 1e-7, 1 - 1e-7)
    loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    accuracy = float(np.mean((p > 0.5) == (y > 0.5)))
    return loss, accuracy


class MlpClient(NumPyClient):
    def __init__(self, index, rows, features):
        self.x, self.y = client_data(index, rows, features)
        self.rng = np.random.default_rng(index)

    def fit(self, parameters, config):
        params = train_epoch(parameters, self.x, self.y, self.rng)
        return params, len(self.x), {}

    def evaluate(self, parameters, config):
        loss, accuracy = evaluate(parameters, self.x, self.y)
        return loss, len(self.x), {"accuracy": accuracy}


class TimedFedAvg(FedAvg):
    """FedAvg that records when each round's evaluation ends."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ends = {}

    def aggregate_evaluate(self, server_round, results, failures):
        outcome = super().aggregate_evaluate(server_round, results, failures)
        self.ends[server_round] = (time.perf_counter(), cpu_seconds())
        return outcome


def cpu_seconds():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--mode", choices=["plain", "secagg+"], required=True)
    parser.add_argument("--features", type=int, required=True)
    parser.add_argument("--hidden", type=int, nargs=2, default=[320, 320])
    parser.add_argument("--rows", type=int, default=1300)
    parser.add_argument("--shares", type=int, help="SecAgg+ num_shares (neighbours + 1)")
    parser.add_argument("--threshold", type=int, help="SecAgg+ reconstruction_threshold")
    args = parser.parse_args()

    features, hidden, rows = args.features, args.hidden, args.rows
    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=args.nodes,
        min_evaluate_clients=args.nodes,
        min_available_clients=args.nodes,
        initial_parameters=ndarrays_to_parameters(initial_parameters(features, hidden)),
    )
    server = ServerApp()

    @server.main()
    def _(grid, context):
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=ROUNDS), strategy=strategy
        )
        if args.mode == "secagg+":
            fit = SecAggPlusWorkflow(
                num_shares=args.shares,
                reconstruction_threshold=args.threshold,
                max_weight=100000.0,
                clipping_range=8.0,
            )
            workflow = DefaultWorkflow(fit_workflow=fit)
        else:
            workflow = DefaultWorkflow()
        workflow(grid, legacy)

    def client_fn(context: Context):
        index = int(context.node_config["partition-id"])
        return MlpClient(index, rows, features).to_client()

    mods = [secaggplus_mod] if args.mode == "secagg+" else []
    client = ClientApp(client_fn=client_fn, mods=mods)
    started = time.perf_counter()
    run_simulation(
        server_app=server,
        client_app=client,
        num_supernodes=args.nodes,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": os.cpu_count() or 2,
                "include_dashboard": False,
                "_node_ip_address": "127.0.0.1",
                "log_to_driver": False,
            },
        },
    )
    total = time.perf_counter() - started
    ends = strategy.ends
    if 1 not in ends or ROUNDS not in ends:
        raise SystemExit(f"rounds missing: {sorted(ends)}")
    measured = ROUNDS - 1
    parameters = sum(int(np.prod(shape)) for shape in shapes(features, hidden))
    print(
        json.dumps(
            {
                "nodes": args.nodes,
                "mode": args.mode,
                "parameters": parameters,
                "shares": args.shares,
                "threshold": args.threshold,
                "round_seconds": (ends[ROUNDS][0] - ends[1][0]) / measured,
                # The driver's own CPU and that of finished children; Ray's
                # workers run on, so this is a lower bound on the machine's.
                "driver_cpu_per_round": (ends[ROUNDS][1] - ends[1][1]) / measured,
                "total_seconds": total,
                "load_average": os.getloadavg(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
