"""What a GPU training step could gain: CUDA graph replay, and bfloat16
against float32, at three model sizes.

On the paper's MNIST set-up a CUDA epoch is set by dispatch, not arithmetic
(``speed_cuda.md``: the same training on 8 features through 4 units takes
as long as the real one). This probe times the estimator's CUDA step
(autograd, exact ELBO, information term on) four ways at each size:

- eager, bfloat16 autocast and float32;
- the same step captured once in a CUDA graph and replayed for every batch,
  bfloat16 and float32: one launch per step instead of several hundred.

Both are the estimator's own step (``_training.step_function``, with
``_CUDA_GRAPHS`` off for eager). The committed results were measured with
this script's earlier form, which captured the same autograd step through
its own copy of PyTorch's recipe (three warm-ups on the first batch rather
than on three batches), before the estimator had one.

Each timing is 100 steps on batches already on the GPU, after 10 warm-up
steps; medians of interleaved repeats.

    python benchmarks/cuda_step_probe.py [--repeats 3]

Writes ``benchmarks/results/cuda_step_probe.md``.
"""

import argparse
import contextlib
import os
import sys
import time
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header_markdown, markdown_table, write_result  # noqa: E402
from speed import PAPER, _config, _module, _sync, float32_training  # noqa: E402

from catvae_sklearn import _training  # noqa: E402

SIZES = [dict(hidden=(400,), batch=128), dict(hidden=(1024,), batch=512),
         dict(hidden=(2048,), batch=2048)]
N_FEATURES, STEPS, WARM_UP = 784, 100, 10


def time_steps(size, mode, batches, seed=0):
    """Seconds per step and the mean negative ELBO per row of the last 20 steps."""
    cfg = {**PAPER, **size}
    device = batches[0].device
    X_dummy = np.zeros((1, N_FEATURES), dtype=np.float32)
    module = _module(X_dummy, cfg, device, seed)
    optimizer = _training.adam(module.parameters(), 1e-3)
    config = _config(cfg, 1)
    name, use_graph = mode
    precision = float32_training() if name == "float32" else contextlib.nullcontext()
    with precision, mock.patch.object(_training, "_CUDA_GRAPHS", use_graph):
        # The estimator's own step: warm-up and capture happen within WARM_UP.
        step = _training.step_function(module, optimizer, config, guided=False)
        for xb in batches[:WARM_UP]:
            step(xb, None, 0.0)
        _sync(device)
        start = time.perf_counter()
        losses = []
        for i, xb in enumerate(batches[WARM_UP:]):
            loss = step(xb, None, 0.0)  # a tensor of its own, also when replayed
            if i >= STEPS - 20:
                losses.append(loss)
        _sync(device)
        seconds = (time.perf_counter() - start) / STEPS
    return seconds, float(torch.stack(losses).mean()) / batches[0].shape[0]


def flops_per_step(size, batches):
    from torch.utils.flop_counter import FlopCounterMode

    cfg = {**PAPER, **size}
    module = _module(np.zeros((1, N_FEATURES), dtype=np.float32), cfg, batches[0].device)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    counter = FlopCounterMode(display=False)
    with float32_training(), counter:
        _training._autograd_training_step(module, optimizer, batches[0], _config(cfg, 1), None, 0.0)
    return counter.get_total_flops()


def matmul_tflops(dtype, device, size=8192, repeats=10):
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


MODES = [("bfloat16", False), ("float32", False), ("bfloat16", True), ("float32", True)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda",
                        help="'cpu' only checks the script: eager float32 steps, small sizes")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    modes, sizes = MODES, SIZES
    if device.type != "cuda":
        modes, sizes = [("float32", False)], SIZES[:1]
    size_of_reference = 8192 if device.type == "cuda" else 512
    peaks = {name: matmul_tflops(dtype, device, size_of_reference)
             for name, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32))}
    rows = []
    for size in sizes:
        generator = torch.Generator(device=device).manual_seed(0)
        batches = [torch.rand(size["batch"], N_FEATURES, device=device, generator=generator)
                   .round_() for _ in range(STEPS + WARM_UP)]
        flops = flops_per_step(size, batches)
        results = {mode: [] for mode in modes}
        errors = {}
        for _ in range(args.repeats):
            for mode in modes:
                if mode in errors:
                    continue
                try:
                    results[mode].append(time_steps(size, mode, batches))
                except Exception as exc:  # a probe: report what failed, time the rest
                    errors[mode] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        eager_bf16 = (np.median([s for s, _ in results[MODES[0]]])
                      if results.get(MODES[0]) else None)
        for mode in modes:
            label = f"{mode[0]}, {'graph replay' if mode[1] else 'eager'}"
            shape = f"hidden {size['hidden'][0]}, batch {size['batch']}"
            if mode in errors:
                rows.append([shape, label, "failed: " + errors[mode], "", "", "", ""])
                continue
            seconds = float(np.median([s for s, _ in results[mode]]))
            loss = float(np.median([v for _, v in results[mode]]))
            rows.append([
                shape, label, f"{seconds * 1e3:.3f}", f"{size['batch'] / seconds:,.0f}",
                f"{flops / seconds / 1e12:.2f} ({flops / seconds / 1e12 / peaks[mode[0]]:.1%})",
                f"{eager_bf16 / seconds:.2f}x" if eager_bf16 else "", f"{loss:.1f}",
            ])
        print(rows[-len(modes):], file=sys.stderr, flush=True)
    table = markdown_table(
        ["size (784 features, K=10, delta=2)", "step", "ms per step", "samples/s",
         "TFLOP/s (share of that precision's reference matmul)", "speed vs eager bfloat16",
         "negative ELBO per row, last 20 steps"], rows)
    text = (header_markdown("CUDA training step: graph replay and precision") + "\n"
            + f"{STEPS} steps after {WARM_UP} warm-up steps, medians of {args.repeats} "
            "interleaved repeats; batches are random binary images already on the GPU. "
            f"Reference {size_of_reference}x{size_of_reference} products: bfloat16 {peaks['bfloat16']:.0f} TFLOP/s, "
            f"float32 {peaks['float32']:.1f} TFLOP/s (no TF32).\n\n" + table + "\n")
    print(text)
    print("written to", write_result("cuda_step_probe.md", text))


if __name__ == "__main__":
    main()
