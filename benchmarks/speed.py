"""Training and inference speed of InfoCatVAE against a straightforward baseline.

The paper's architecture (one hidden layer of 400, K=10, delta=2, batch 128,
information term on) on the MNIST test set (10,000 x 784). In the same run:

- a baseline implementation of the same model and loss that loops over
  clusters in Python and feeds a ``torch.utils.data.DataLoader``;
- achieved GFLOP/s of a training epoch (FLOPs counted by torch's
  FlopCounterMode) next to this machine's measured matmul throughput;
- predict / transform / predict_proba / score_samples rows per second;
- extra memory of predict on 1,000,000 rows (in a child process);
- scaling of epoch time with n_samples, K and batch size.

Writes ``benchmarks/results/speed_<device>.md``.

    python benchmarks/speed.py [--device cpu|cuda] [--repeats 3] [--quick]
"""

import argparse
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_MNIST_DIR, header_markdown, markdown_table, write_result  # noqa: E402

from catvae_sklearn import InfoCatVAE  # noqa: E402
from catvae_sklearn._model import CategoricalVAE  # noqa: E402
from catvae_sklearn._training import TrainingConfig, to_tensor, train  # noqa: E402
from catvae_sklearn.datasets import load_mnist_idx  # noqa: E402

PAPER = dict(hidden=(400,), K=10, delta=2, batch=128, prior_scale=3.0, info_weight=10.0)


# --------------------------------------------------------------------- baseline
class LoopCatVAE(nn.Module):
    """The model as one would first write it: one head per cluster, loops."""

    def __init__(self, n_features, K, delta, hidden, prior_scale):
        super().__init__()
        self.K, self.d = K, K * delta
        self.enc = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
        self.logits = nn.Linear(hidden, K)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden + K, hidden), nn.ReLU(), nn.Linear(hidden, 2 * self.d))
            for _ in range(K)
        )
        self.dec = nn.Sequential(nn.Linear(self.d, hidden), nn.ReLU(), nn.Linear(hidden, n_features))
        means = torch.zeros(K, self.d)
        for c in range(K):
            means[c, c * delta : (c + 1) * delta] = prior_scale
        self.register_buffer("prior_means", means)

    def loss(self, x, info_weight):
        h = self.enc(x)
        logits = self.logits(h)
        q = logits.softmax(-1)
        elbo = -(q * (q.clamp_min(1e-12).log() + math.log(self.K))).sum(-1)
        for c in range(self.K):
            onehot = F.one_hot(torch.full((x.shape[0],), c), self.K).float()
            mean, logvar = self.heads[c](torch.cat([h, onehot], 1)).chunk(2, -1)
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            rec = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
            kl = 0.5 * (logvar.exp() + (mean - self.prior_means[c]) ** 2 - 1 - logvar).sum(-1)
            elbo = elbo + q[:, c] * (rec - kl)
        info = 0.0
        per = max(1, x.shape[0] // self.K)
        for c in range(self.K):
            z = self.prior_means[c] + torch.randn(per, self.d)
            x_gen = torch.sigmoid(self.dec(z))
            info = info + F.cross_entropy(self.logits(self.enc(x_gen)), torch.full((per,), c))
        return -elbo.mean() + info_weight * info / self.K


def baseline_epoch_seconds(X, epochs, cfg):
    torch.manual_seed(0)
    model = LoopCatVAE(X.shape[1], cfg["K"], cfg["delta"], cfg["hidden"][0], cfg["prior_scale"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(X)), batch_size=cfg["batch"], shuffle=True
    )
    start = time.perf_counter()
    for _ in range(epochs):
        for (xb,) in loader:
            loss = model.loss(xb, cfg["info_weight"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / epochs


# ------------------------------------------------------------------------ ours
def _module(X, cfg, device):
    torch.manual_seed(0)
    return CategoricalVAE(
        X.shape[1], cfg["K"], cfg["delta"], cfg["hidden"], cfg["prior_scale"], "bernoulli"
    ).to(device)


def _config(cfg, epochs):
    return TrainingConfig(
        batch_size=cfg["batch"], learning_rate=1e-3, max_iter=epochs, tol=0.0,
        n_iter_no_change=10**9, info_weight=cfg["info_weight"], balance_weight=1.0,
        pretrain_iter=0, init_params="random", guide_iter=0, seed=0,
    )


def ours_epoch_seconds(X, epochs, cfg, device):
    module = _module(X, cfg, device)
    Xt = to_tensor(X, device)
    train(module, Xt, None, _config(cfg, 1))  # warm-up: allocator, kernels
    _sync(device)
    start = time.perf_counter()
    train(module, Xt, None, _config(cfg, epochs))
    _sync(device)
    return (time.perf_counter() - start) / epochs


_TRAINING_MEMORY_CHILD = """
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from speed import _config, _module, proc_status_bytes as status
from catvae_sklearn._training import to_tensor, train
cfg = json.loads(sys.argv[2])
X = np.load(sys.argv[3])
device = torch.device(sys.argv[4])
module = _module(X, cfg, device)
Xt = to_tensor(X, device)
if device.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    train(module, Xt, None, _config(cfg, 1)); torch.cuda.synchronize()
    print((torch.cuda.max_memory_allocated() - base) / 2**20)
else:
    base = status("VmRSS")
    train(module, Xt, None, _config(cfg, 1))
    print((status("VmHWM") - base) / 2**20)
"""


def proc_status_bytes(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def training_peak_memory_mib(X, cfg, device, tmpdir):
    """Extra peak memory of one training epoch, data and model already built.

    Measured in a fresh process, so memory an earlier run left mapped does
    not hide it. CPU: peak RSS (VmHWM) less RSS before the epoch. CUDA:
    ``torch.cuda.max_memory_allocated`` less the allocation before it.
    """
    import json

    data = os.path.join(tmpdir, "speed_training_data.npy")
    np.save(data, X)
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run(
        [sys.executable, "-c", _TRAINING_MEMORY_CHILD, here, json.dumps(cfg), data, str(device)],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def training_flops_per_epoch(X, cfg, device):
    """FLOPs of one epoch, counted on one training step and scaled."""
    from torch.utils.flop_counter import FlopCounterMode

    module = _module(X, cfg, device)
    xb = to_tensor(X[: cfg["batch"]], device)
    counter = FlopCounterMode(display=False)
    with counter:
        out = module.elbo(xb)
        loss = -out["elbo"].mean() + cfg["info_weight"] * module.information_loss(
            max(1, cfg["batch"] // cfg["K"])
        )
        loss.backward()
    return counter.get_total_flops() * X.shape[0] / cfg["batch"]


def matmul_gflops(device, n=2048, repeats=10):
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / np.median(times) / 1e9


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def inference_rates(model, X, repeats):
    rows = {}
    for method in ("predict", "predict_proba", "transform", "score_samples"):
        fn = getattr(model, method)
        fn(X[:1000])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(X)
            times.append(time.perf_counter() - start)
        rows[method] = X.shape[0] / np.median(times)
    return rows


_MEMORY_CHILD = r"""
import sys, numpy as np
from catvae_sklearn import InfoCatVAE
model = InfoCatVAE.load(sys.argv[1], device=sys.argv[2])
X = np.random.RandomState(0).uniform(size=(1_000_000, 784)).astype(np.float32)
def rss_peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
for method in ("predict", "predict_proba", "transform", "score_samples"):
    model.predict(X[:100])
    reset_peak(); base = rss_peak()
    getattr(model, method)(X)
    print(method, (rss_peak() - base) / 2**20)
"""


def million_row_memory(model, device, tmpdir):
    path = os.path.join(tmpdir, "speed_model.catvae")
    model.save(path)
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, path, str(device)],
        capture_output=True, text=True, check=True,
    ).stdout
    return {line.split()[0]: float(line.split()[1]) for line in out.strip().splitlines()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timing")
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR)
    parser.add_argument("--quick", action="store_true", help="skip the scaling tables")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    X, _ = load_mnist_idx(
        os.path.join(args.mnist_dir, "t10k-images-idx3-ubyte.gz"),
        os.path.join(args.mnist_dir, "t10k-labels-idx1-ubyte.gz"),
    )
    sections = []

    ours, base = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        ours.append(ours_epoch_seconds(X, args.epochs, PAPER, device))
        if device.type == "cpu":
            base.append(baseline_epoch_seconds(X, args.epochs, PAPER))
        print(f"epoch: ours {ours[-1]:.2f}s baseline {base[-1] if base else float('nan'):.2f}s",
              file=sys.stderr, flush=True)
    flops = training_flops_per_epoch(X, PAPER, device)
    peak = matmul_gflops(device)
    t_ours = float(np.median(ours))
    rows = [
        ["epoch seconds, InfoCatVAE", f"{t_ours:.2f}"],
        ["training samples/s, InfoCatVAE", f"{X.shape[0] / t_ours:,.0f}"],
        ["training GFLOP per epoch (FlopCounterMode)", f"{flops / 1e9:.1f}"],
        ["achieved GFLOP/s, InfoCatVAE", f"{flops / t_ours / 1e9:.1f}"],
        ["measured matmul GFLOP/s (2048x2048 float32)", f"{peak:.1f}"],
        ["share of matmul throughput", f"{flops / t_ours / 1e9 / peak:.0%}"],
    ]
    if device.type == "cuda" or os.path.exists("/proc/self/status"):
        import tempfile

        memory_kind = "GPU allocation" if device.type == "cuda" else "RSS"
        with tempfile.TemporaryDirectory() as tmp:
            extra = training_peak_memory_mib(X, PAPER, device, tmp)
        rows.append([f"training extra peak {memory_kind} MiB (one epoch, data loaded)",
                     f"{extra:.0f}"])
    if base:
        t_base = float(np.median(base))
        rows += [
            ["epoch seconds, loop + DataLoader baseline", f"{t_base:.2f}"],
            ["speed-up over baseline (median ratio)", f"{t_base / t_ours:.2f}x"],
        ]
    sections.append("## Training, paper architecture\n\n"
                    f"Median of {args.repeats} interleaved runs of {args.epochs} epoch(s).\n\n"
                    + markdown_table(["measure", "value"], rows))

    model = InfoCatVAE(10, 2, hidden_layer_sizes=(400,), batch_size=128, max_iter=2,
                       init_params="random", device=str(device), random_state=0).fit(X)
    rates = inference_rates(model, np.tile(X, (5, 1)), args.repeats)
    inference_rows = [[m, f"{r:,.0f}"] for m, r in rates.items()]
    if device.type == "cpu":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            memory = million_row_memory(model, device, tmp)
        inference_rows = [row + [f"{memory[row[0]]:.0f}"] for row in inference_rows]
        header = ["method", "rows/s (50,000 rows)", "extra peak RSS MiB, 1,000,000 x 784 float32"]
    else:
        header = ["method", "rows/s (50,000 rows)"]
    sections.append("## Inference\n\n" + markdown_table(header, inference_rows))

    if not args.quick:
        scale_rows = []
        for n in (2500, 5000, 10000):
            scale_rows.append(["n_samples", n, f"{ours_epoch_seconds(X[:n], 1, PAPER, device):.2f}"])
        for K in (5, 10, 20, 50):
            scale_rows.append(["K", K, f"{ours_epoch_seconds(X, 1, {**PAPER, 'K': K}, device):.2f}"])
        for batch in (64, 128, 256, 512):
            scale_rows.append(["batch size", batch,
                               f"{ours_epoch_seconds(X, 1, {**PAPER, 'batch': batch}, device):.2f}"])
        sections.append("## Scaling of epoch time (one epoch each)\n\n"
                        + markdown_table(["varied", "value", "epoch seconds"], scale_rows))

    text = header_markdown(f"Speed on {device.type}") + "\n" + "\n\n".join(sections) + "\n"
    print(text)
    print("written to", write_result(f"speed_{device.type}.md", text))


if __name__ == "__main__":
    main()
