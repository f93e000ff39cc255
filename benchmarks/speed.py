"""Training and inference speed of InfoCatVAE against a straightforward baseline.

The paper's architecture (one hidden layer of 400, K=10, delta=2, batch 128,
information term on) on the MNIST test set (10,000 x 784). In one run:

- a baseline implementation of the same model and loss that loops over
  clusters in Python and feeds a ``torch.utils.data.DataLoader``;
- InfoCatVAE's epoch on the exact ELBO (the baseline's computation) and
  with the estimator's default training on the device (guided, and on the
  CPU decoding only the likely clusters), interleaved with the baseline;
- on a GPU, the exact epoch with the data resident or streamed from pinned
  host memory, and replayed from a CUDA graph or eager;
- predict / predict_proba / transform / score_samples rows per second;
- the extra memory of each on 1,000,000 rows (in a child process; on a GPU,
  device memory too).

Writes ``benchmarks/results/speed_<device>.md``.

    python benchmarks/speed.py [--device cpu|cuda] [--repeats 5]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_MNIST_DIR, header_markdown, markdown_table, write_result  # noqa: E402

from catvae_sklearn import InfoCatVAE  # noqa: E402
from catvae_sklearn._device import (  # noqa: E402
    cpu_bfloat16_pays,
    decode_threshold,
    to_tensor,
)
from catvae_sklearn._model import CategoricalVAE  # noqa: E402
from catvae_sklearn._training import TrainingConfig, adam, train  # noqa: E402
from catvae_sklearn.datasets import load_mnist_idx  # noqa: E402

PAPER = dict(hidden=400, K=10, delta=2, batch=128, prior_scale=3.0, info_weight=10.0)


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
        q = self.logits(h).softmax(-1)
        elbo = -(q * (q.clamp_min(1e-12).log() + np.log(self.K))).sum(-1)
        for c in range(self.K):
            onehot = F.one_hot(torch.full((x.shape[0],), c, device=x.device), self.K).float()
            mean, logvar = self.heads[c](torch.cat([h, onehot], 1)).chunk(2, -1)
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            rec = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
            kl = 0.5 * (logvar.exp() + (mean - self.prior_means[c]) ** 2 - 1 - logvar).sum(-1)
            elbo = elbo + q[:, c] * (rec - kl)
        info, per = 0.0, max(1, x.shape[0] // self.K)
        for c in range(self.K):
            z = self.prior_means[c] + torch.randn(per, self.d, device=x.device)
            target = torch.full((per,), c, device=x.device)
            info = info + F.cross_entropy(self.logits(self.enc(torch.sigmoid(self.dec(z)))), target)
        return -elbo.mean() + info_weight * info / self.K


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def baseline_epoch_seconds(X, device):
    torch.manual_seed(0)
    model = LoopCatVAE(X.shape[1], PAPER["K"], PAPER["delta"], PAPER["hidden"], PAPER["prior_scale"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(X)), batch_size=PAPER["batch"], shuffle=True
    )
    start = time.perf_counter()
    for (xb,) in loader:
        loss = model.loss(xb.to(device), PAPER["info_weight"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


# How InfoCatVAE is timed. "exact" decodes every row under every cluster, the
# baseline's computation. "default" is the estimator's training on the
# device: guided (k-means labels stand in for the default t-SNE start, since
# the guide's source does not change the cost of an epoch) with the device's
# min_decode_proba="auto".
MODES = ("exact", "default")


def _config(mode, device, n_features, cuda_graph=True):
    # The default mode trains as the estimator would (bfloat16 on a CPU that
    # has it, for batches this large); the exact mode in float32, as the baseline.
    return TrainingConfig(
        batch_size=PAPER["batch"], learning_rate=1e-3, max_iter=1, tol=0.0, n_iter_no_change=1,
        info_weight=PAPER["info_weight"], balance_weight=1.0,
        min_decode_proba=decode_threshold("auto", device) if mode == "default" else 0.0,
        pretrain_iter=0, guide_iter=None, seed=0,
        cpu_bfloat16=mode == "default" and cpu_bfloat16_pays(device, PAPER["batch"], n_features),
        cuda_graph=cuda_graph and device.type == "cuda",
    )


def ours_epoch_seconds(X, device, mode, guide=None, home=None, cuda_graph=True):
    """Seconds of one epoch, after one warm-up epoch (allocator, kernels, the
    CUDA graph's capture, and the posterior sharpening that sparse decoding
    relies on)."""
    torch.manual_seed(0)
    module = CategoricalVAE(X.shape[1], PAPER["K"], PAPER["delta"], (PAPER["hidden"],),
                            PAPER["prior_scale"], "bernoulli").to(device)
    Xt = to_tensor(X, device if home is None else home)
    guide = None if guide is None or mode == "exact" else guide.to(Xt.device)
    optimizer = adam(module.parameters(), 1e-3)
    config = _config(mode, device, X.shape[1], cuda_graph)
    train(module, Xt, None, config, optimizer, guide)
    _sync(device)
    start = time.perf_counter()
    train(module, Xt, None, config, optimizer, guide)
    _sync(device)
    return time.perf_counter() - start


def training_section(X, device, repeats):
    from sklearn.cluster import KMeans

    guide = torch.as_tensor(KMeans(PAPER["K"], n_init=1, random_state=0).fit_predict(X), dtype=torch.long)
    seconds = {name: [] for name in ("baseline",) + MODES}
    for _ in range(repeats):  # interleaved, so that a slow minute slows every row
        seconds["baseline"].append(baseline_epoch_seconds(X, device))
        for mode in MODES:
            seconds[mode].append(ours_epoch_seconds(X, device, mode, guide))
    baseline = np.median(seconds["baseline"])
    titles = {
        "baseline": "baseline: a head per cluster in a Python loop, DataLoader",
        "exact": "InfoCatVAE, exact ELBO (every cluster decoded), no guide",
        "default": f"InfoCatVAE, estimator default on {device.type} (guided, "
        f"min_decode_proba={decode_threshold('auto', device):g})",
    }
    rows = [[titles[name], f"{np.median(s):.3f}", f"{min(s):.3f}–{max(s):.3f}",
             f"{X.shape[0] / np.median(s):,.0f}", f"{baseline / np.median(s):.2f}x"]
            for name, s in seconds.items()]
    return (f"## Training epoch, paper architecture\n\nMedians of {repeats} interleaved repeats, "
            "each InfoCatVAE epoch after a warm-up epoch.\n\n"
            + markdown_table(["training", "epoch s (median)", "range", "samples/s",
                              "speed-up over baseline"], rows))


def gpu_section(X, device, repeats):
    """The exact epoch with the data resident on the GPU or streamed from
    pinned host memory, replayed from a CUDA graph or eager."""
    variants = {
        "data on the GPU, CUDA graph (the estimator)": dict(),
        "data on the GPU, eager": dict(cuda_graph=False),
        "data streamed from pinned host memory, CUDA graph": dict(home=torch.device("cpu")),
    }
    seconds = {name: [] for name in variants}
    for _ in range(repeats):
        for name, options in variants.items():
            seconds[name].append(ours_epoch_seconds(X, device, "exact", **options))
    reference = np.median(next(iter(seconds.values())))
    rows = [[name, f"{np.median(s):.3f}", f"{X.shape[0] / np.median(s):,.0f}",
             f"{reference / np.median(s):.2f}x"] for name, s in seconds.items()]
    return ("## GPU training: where the data live, CUDA graph\n\n"
            + markdown_table(["exact ELBO, paper architecture", "epoch s", "samples/s",
                              "speed vs the estimator's"], rows))


def inference_section(model, X, repeats):
    rows = []
    for method in ("predict", "predict_proba", "transform", "score_samples"):
        fn = getattr(model, method)
        fn(X[:1000])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(X)
            times.append(time.perf_counter() - start)
        rows.append([method, f"{X.shape[0] / np.median(times):,.0f}"])
    return ("## Inference on the MNIST test set\n\n"
            + markdown_table(["method", "rows/s (median)"], rows))


_MEMORY_CHILD = r"""
import sys, numpy as np
from catvae_sklearn import InfoCatVAE
model = InfoCatVAE.load(sys.argv[1], device=sys.argv[2])
X = np.random.RandomState(0).uniform(size=(1_000_000, 784)).astype(np.float32)
def rss_peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
cuda = sys.argv[2].startswith("cuda")
if cuda:
    import torch
for method in ("predict", "predict_proba", "transform", "score_samples"):
    model.predict(X[:100])
    if cuda:
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        gpu_base = torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS
    base = rss_peak()
    getattr(model, method)(X)
    gpu = (torch.cuda.max_memory_allocated() - gpu_base) / 2**20 if cuda else 0.0
    print(method, (rss_peak() - base) / 2**20, gpu)
"""


def memory_section(model, device):
    with tempfile.TemporaryDirectory() as tmpdir:
        path = os.path.join(tmpdir, "speed_model.catvae")
        model.save(path)
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, path, str(device)],
                             capture_output=True, text=True, check=True).stdout
    rows = [[name, f"{float(rss):.0f}", f"{float(gpu):.0f}"]
            for name, rss, gpu in (line.split() for line in out.strip().splitlines())]
    return ("## Memory on 1,000,000 x 784 float32 rows (2,991 MiB of input)\n\n"
            "Extra peak memory beyond the input and the loaded model, in a fresh process.\n\n"
            + markdown_table(["method", "extra peak RSS MiB", "extra peak GPU MiB"], rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    X, _ = load_mnist_idx(os.path.join(args.mnist_dir, "t10k-images-idx3-ubyte.gz"),
                          os.path.join(args.mnist_dir, "t10k-labels-idx1-ubyte.gz"))
    X = X.astype(np.float32)
    sections = [training_section(X, device, args.repeats)]
    if device.type == "cuda":
        sections.append(gpu_section(X, device, args.repeats))
    model = InfoCatVAE(PAPER["K"], PAPER["delta"], hidden_layer_sizes=(PAPER["hidden"],),
                       init_params="random", max_iter=2, device=str(device), random_state=0).fit(X)
    sections += [inference_section(model, X, args.repeats), memory_section(model, device)]
    text = header_markdown(f"Speed on {device.type}") + "\n" + "\n\n".join(sections) + "\n"
    print(text)
    print("written to", write_result(f"speed_{device.type}.md", text))


if __name__ == "__main__":
    main()
