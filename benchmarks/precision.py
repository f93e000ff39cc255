"""Does bfloat16 mixed precision change the ELBO? float32 against bfloat16
autocast training, on the same data and seeds.

On CUDA the estimator trains its forward pass under bfloat16 autocast
(``catvae_sklearn._training.mixed_precision``); this compares that with
float32 training on the same device. On a CPU, the same comparison runs
with the CPU's bfloat16 autocast, which rounds the same way (bfloat16
operands, float32 accumulation) but runs slower than float32 on CPUs
without native bfloat16: the figures then speak to accuracy, not speed.

For each seed and precision: the fitted model's ``score`` (mean ELBO in
nats, always computed in float32), clustering accuracy (labels used only to
score) and fit time. Also, for each float32 model, how far its exact ELBO
moves when the same forward pass runs under bfloat16 autocast.

Writes ``benchmarks/results/precision_<device>.md``.

    python benchmarks/precision.py [--device cpu|cuda] [--seeds 3]
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header_markdown, markdown_table, write_result  # noqa: E402

from catvae_sklearn import InfoCatVAE, _training  # noqa: E402
from catvae_sklearn.metrics import cluster_accuracy_score  # noqa: E402

_PRECISIONS = {
    "float32": lambda device: contextlib.nullcontext(),
    # As _training.mixed_precision builds it on CUDA: without the weight
    # cache, which a CUDA graph's capture cannot hold.
    "bfloat16 autocast": lambda device: torch.autocast(
        device.type, dtype=torch.bfloat16, cache_enabled=False),
}


def fit(X, seed, device, precision):
    original = _training.mixed_precision
    _training.mixed_precision = _PRECISIONS[precision]
    try:
        start = time.perf_counter()
        model = InfoCatVAE(n_clusters=10, device=str(device), random_state=seed).fit(X)
        return model, time.perf_counter() - start
    finally:
        _training.mixed_precision = original


def forward_elbo_shift(model, X, device):
    """Mean |ELBO(bfloat16 forward) - ELBO(float32 forward)| per sample, same noise."""
    module = model.module_
    x = torch.as_tensor(X, dtype=torch.float32, device=device)
    noise = _training.fixed_noise((1, module.n_clusters, module.latent_dim), device)
    with torch.no_grad():
        full = module.elbo(x, noise=noise)["elbo"]
        with _PRECISIONS["bfloat16 autocast"](device):
            rounded = module.elbo(x, noise=noise)["elbo"].float()
    return float((rounded - full).abs().mean()), float(full.mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)

    results = {name: [] for name in _PRECISIONS}
    shifts = []
    for seed in range(args.seeds):
        for precision in _PRECISIONS:
            model, seconds = fit(X, seed, device, precision)
            results[precision].append(
                (model.score(X), cluster_accuracy_score(y, model.labels_), seconds)
            )
            if precision == "float32":
                shifts.append(forward_elbo_shift(model, X, device))
            print(seed, precision, results[precision][-1], flush=True)

    rows = []
    for precision, runs in results.items():
        scores, accuracies, seconds = zip(*runs)
        rows.append([
            precision,
            " / ".join(f"{s:.3f}" for s in scores),
            f"{statistics.median(scores):.3f}",
            " / ".join(f"{a:.3f}" for a in accuracies),
            f"{statistics.median(seconds):.1f}",
        ])
    median_gap = statistics.median(results["bfloat16 autocast"][i][0] - results["float32"][i][0]
                                   for i in range(args.seeds))
    spread = max(r[0] for r in results["float32"]) - min(r[0] for r in results["float32"])
    shift, elbo = statistics.median(s for s, _ in shifts), statistics.median(e for _, e in shifts)
    text = (
        header_markdown(f"Mixed precision: float32 vs bfloat16 autocast training ({device.type})")
        + "\nDigits (1,797 x 64, pixels / 16), InfoCatVAE defaults with n_clusters=10, "
        f"seeds 0..{args.seeds - 1}. score = mean ELBO per sample in nats, computed in float32. "
        "Labels are used only to score.\n\n"
        + markdown_table(
            ["training precision", "score per seed", "median score", "accuracy per seed",
             "median fit s"],
            rows,
        )
        + f"\n\n- median score change, bfloat16 minus float32 (same seed): {median_gap:+.3f} nats; "
        f"spread of the float32 scores over seeds: {spread:.3f} nats\n"
        f"- the same float32 model's ELBO with its forward pass under bfloat16 autocast: "
        f"{shift:.4f} nats per sample mean absolute change, on an ELBO of {elbo:.2f}\n"
    )
    print(text)
    if not args.no_save:
        print("written to", write_result(f"precision_{device.type}.md", text))


if __name__ == "__main__":
    main()
