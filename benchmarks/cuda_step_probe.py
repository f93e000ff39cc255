"""What a GPU training step could gain: CUDA graph replay, and bfloat16
against float32, at three model sizes.

On the paper's MNIST set-up a CUDA epoch is set by dispatch, not arithmetic
(``speed_cuda.md``: the same training on 8 features through 4 units takes
as long as the real one). This probe times the estimator's CUDA step
(autograd, exact ELBO, information term on) four ways at each size:

- eager, bfloat16 autocast (what the estimator does) and float32;
- the same step captured once in a CUDA graph and replayed for every batch,
  bfloat16 and float32: one launch per step instead of several hundred.

Each timing is 100 steps on batches already on the GPU, after 10 warm-up
steps; medians of interleaved repeats. Nothing here changes how the
estimator trains: it measures what a change would buy.

    python benchmarks/cuda_step_probe.py [--repeats 3]

Writes ``benchmarks/results/cuda_step_probe.md``.
"""

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header_markdown, markdown_table, write_result  # noqa: E402
from speed import PAPER, _config, _module  # noqa: E402

from catvae_sklearn import _training  # noqa: E402

SIZES = [dict(hidden=(400,), batch=128), dict(hidden=(1024,), batch=512),
         dict(hidden=(2048,), batch=2048)]
N_FEATURES, STEPS, WARM_UP = 784, 100, 10


@contextlib.contextmanager
def precision(name):
    """Train under ``name``: "bfloat16" autocast or "float32". Autocast's
    weight cache is off, as graph capture requires, in both eager and graphed
    runs so that they differ only in the replay."""
    original = _training.mixed_precision
    if name == "bfloat16":
        _training.mixed_precision = lambda device: torch.autocast(
            "cuda", dtype=torch.bfloat16, cache_enabled=False)
    else:
        _training.mixed_precision = lambda device: contextlib.nullcontext()
    try:
        yield
    finally:
        _training.mixed_precision = original


def _step(module, optimizer, xb, config):
    return _training._autograd_training_step(module, optimizer, xb, config, None, 0.0)


def graphed(module, optimizer, example, config):
    """The training step on batches shaped like ``example``, captured in a
    CUDA graph (PyTorch's whole-network recipe): returns a function that
    copies a batch in and replays it."""
    static_x = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # optimizer state and allocator pools exist before capture
            _step(module, optimizer, static_x, config)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = _step(module, optimizer, static_x, config)

    def replay(xb):
        static_x.copy_(xb)
        graph.replay()
        return static_loss

    return replay


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def capturable_adam(params):
    """Adam whose state lives on the GPU, so a graph can replay its step."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=1e-3, fused=True, capturable=True)
    except (RuntimeError, ValueError):  # no fused kernel here
        return torch.optim.Adam(params, lr=1e-3, capturable=True)


def time_steps(size, mode, batches, seed=0):
    """Seconds per step and the mean negative ELBO per row of the last 20 steps."""
    cfg = {**PAPER, **size}
    device = batches[0].device
    X_dummy = np.zeros((1, N_FEATURES), dtype=np.float32)
    module = _module(X_dummy, cfg, device, seed)
    optimizer = capturable_adam(module.parameters())
    config = _config(cfg, 1)
    name, use_graph = mode
    with precision(name):
        step = (graphed(module, optimizer, batches[0], config) if use_graph
                else lambda xb: _step(module, optimizer, xb, config))
        for xb in batches[:WARM_UP]:
            step(xb)
        _sync(device)
        start = time.perf_counter()
        losses = []
        for i, xb in enumerate(batches[WARM_UP:]):
            loss = step(xb)
            if i >= STEPS - 20:
                losses.append(loss.clone())
        _sync(device)
        seconds = (time.perf_counter() - start) / STEPS
    return seconds, float(torch.stack(losses).mean()) / batches[0].shape[0]


def flops_per_step(size, batches):
    from torch.utils.flop_counter import FlopCounterMode

    cfg = {**PAPER, **size}
    module = _module(np.zeros((1, N_FEATURES), dtype=np.float32), cfg, batches[0].device)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    counter = FlopCounterMode(display=False)
    with precision("float32"), counter:
        _step(module, optimizer, batches[0], _config(cfg, 1))
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
