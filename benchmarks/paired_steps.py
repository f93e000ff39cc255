"""The CPU training step of the working tree against the one at a git revision,
timed step by step, alternating, on one model.

On a machine whose speed drifts over minutes (a shared 2-vCPU VM), two runs
of ``speed.py`` on the same code can differ by a fifth, so a change worth a
few percent cannot be seen by comparing runs. Here every batch of the
default training (paper architecture on MNIST, guided, sparse decoding) is
stepped once by each version, in alternating order, on the same model and
optimizer, which both keep training: drift hits both alike, and the median
of the per-batch ratios shows the change. Each timing covers gathering the
batch, the loss and gradient, and the optimizer step.

    python benchmarks/paired_steps.py --against HEAD~3 [--epochs 6]

Writes ``benchmarks/results/paired_steps_cpu.md``.
"""

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    DEFAULT_MNIST_DIR,
    REPO_ROOT,
    header_markdown,
    markdown_table,
    write_result,
)
from speed import PAPER, _config, _guide, _module  # noqa: E402

from catvae_sklearn import _training  # noqa: E402
from catvae_sklearn._training import adam, to_tensor, train  # noqa: E402
from catvae_sklearn.datasets import load_mnist_idx  # noqa: E402

_PACKAGE_AT_REVISION = "catvae_sklearn_at_revision"


def training_module_at(revision, folder):
    """``_training`` of the package as it was at ``revision``, imported from
    a copy under another name (its imports within the package are relative)."""
    archive = subprocess.run(
        ["git", "-C", REPO_ROOT, "archive", revision, "catvae_sklearn"],
        check=True, capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    os.rename(os.path.join(folder, "catvae_sklearn"), os.path.join(folder, _PACKAGE_AT_REVISION))
    sys.path.insert(0, folder)
    return importlib.import_module(f"{_PACKAGE_AT_REVISION}._training")


def paired_step_seconds(versions, X, guide, config, epochs, device):
    """Seconds of each version's step on every batch of ``epochs`` epochs."""
    module = _module(X, PAPER, device)
    optimizer = adam(module.parameters(), 1e-3)
    train(module, X, None, config, optimizer, guide)  # warm-up epoch
    seconds = {name: [] for name in versions}
    order = list(versions)
    n_rows, batch = X.shape[0], config.batch_size
    for _ in range(epochs):
        permutation = torch.randperm(n_rows)
        for start in range(0, n_rows - batch + 1, batch):
            idx = permutation[start : start + batch]
            order.reverse()  # neither version always goes first
            for name in order:
                training = versions[name]
                begin = time.perf_counter()
                xb = training._rows(X, idx, device)
                labels = training._rows(guide, idx, device)
                training.training_step(module, optimizer, xb, config, labels, 1.0)
                seconds[name].append(time.perf_counter() - begin)
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare with")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR)
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    X = to_tensor(load_mnist_idx(os.path.join(args.mnist_dir, "t10k-images-idx3-ubyte.gz")), device)
    guide = _guide(X.numpy(), PAPER["K"], "default", device)
    config = _config(PAPER, 1, "default")
    sha = subprocess.run(
        ["git", "-C", REPO_ROOT, "rev-parse", "--short", args.against],
        check=True, capture_output=True, text=True,
    ).stdout.strip()

    with tempfile.TemporaryDirectory() as folder:
        versions = {f"at {args.against} ({sha})": training_module_at(args.against, folder),
                    "working tree": _training}
        seconds = paired_step_seconds(versions, X, guide, config, args.epochs, device)

    (old_name, old), (new_name, new) = seconds.items()
    ratios = [b / a for a, b in zip(old, new)]
    quartiles = statistics.quantiles(ratios, n=4)
    steps_per_epoch = len(old) // args.epochs
    per_epoch = [statistics.median(ratios[i : i + steps_per_epoch])
                 for i in range(0, len(ratios), steps_per_epoch)]
    rows = [[name, f"{statistics.median(times) * 1e3:.2f}", f"{sum(times) / args.epochs:.3f}"]
            for name, times in seconds.items()]
    text = "\n".join([
        header_markdown("CPU training step, paired against another revision"),
        f"Default training (paper architecture, MNIST, guided, min_decode_proba "
        f"{config.min_decode_proba}), {args.epochs} epochs after a warm-up epoch: every "
        f"batch stepped by both versions in alternating order on one model and "
        f"optimizer. Each time covers the batch gather, the gradient and Adam.\n",
        markdown_table(["step", "median ms", "seconds per epoch (full batches)"], rows),
        "",
        f"- working tree over {old_name}, per batch: median {statistics.median(ratios):.3f} "
        f"(quartiles {quartiles[0]:.3f} and {quartiles[2]:.3f}); "
        f"ratio of the summed times {sum(new) / sum(old):.3f}",
        "- median per epoch: " + ", ".join(f"{r:.3f}" for r in per_epoch),
        "",
    ])
    print(text)
    print("written to", write_result("paired_steps_cpu.md", text))


if __name__ == "__main__":
    main()
