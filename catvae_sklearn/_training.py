"""Fitting a :class:`~catvae_sklearn._model.CategoricalVAE`: warm-up, initial
cluster assignment, and the main loop with early stopping and roll-back.

Data live on the training device as one tensor and are indexed batch by
batch: a ``DataLoader`` would copy and collate every batch in Python. Data
too large for a GPU's free memory stay on the host instead, and each batch
is copied over from page-locked memory without blocking (see
:func:`data_device` and :func:`_rows`).
"""

import contextlib
import math
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.exceptions import ConvergenceWarning

from ._gradients import loss_and_gradients
from ._model import Autoencoder


class TrainingDivergedError(ValueError):
    """The loss became non-finite before any finite state was reached."""


@dataclass
class TrainingConfig:
    batch_size: int
    learning_rate: float
    max_iter: int
    tol: float
    n_iter_no_change: int
    info_weight: float
    balance_weight: float
    min_decode_proba: float | str
    pretrain_iter: int
    init_params: str
    guide_iter: int | None
    seed: int
    verbose: int = 0


@dataclass
class TrainingResult:
    loss_curve: list
    validation_scores: list
    n_iter: int
    interrupted: bool = False
    diverged: bool = False


def _batches(n, batch_size, device, shuffle=True):
    order = torch.randperm(n, device=device) if shuffle else torch.arange(n, device=device)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


# Share of a GPU's free memory the training data may take: the rest is left
# for weights, optimizer state and activations, which grow with batch size
# and K but stay far smaller than a data set that comes anywhere near this.
_RESIDENT_DATA_FRACTION = 0.5


def data_device(n_bytes, device):
    """Where ``n_bytes`` of training data should live to train on ``device``.

    On the device itself when they fit in half of its free memory, so a batch
    is an index into device memory; otherwise on the host, streamed a batch
    at a time. CPU and MPS (whose memory is the host's) always hold the data.
    """
    if device.type != "cuda":
        return device
    free_bytes, _ = torch.cuda.mem_get_info(device)
    return device if n_bytes <= _RESIDENT_DATA_FRACTION * free_bytes else torch.device("cpu")


def _rows(X, idx, device):
    """Rows ``idx`` of ``X`` on ``device``.

    An index when ``X`` lives there already. From the host, the batch is
    gathered into page-locked memory and copied without blocking, so the
    copy overlaps the previous step's kernels; torch's pinned allocator
    keeps the buffer alive until the copy has finished.
    """
    batch = X.index_select(0, idx)  # a fifth of X[idx]'s time on the CPU
    if batch.device == device:
        return batch
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def _map_rows(fn, X, device, batch_size=4096):
    """``fn`` applied to the rows of ``X`` a batch at a time on ``device``,
    gathered on ``X``'s own device (the host, for streamed data)."""
    return torch.cat(
        [
            fn(_rows(X, idx, device)).to(X.device)
            for idx in _batches(X.shape[0], batch_size, X.device, shuffle=False)
        ]
    )


def mixed_precision(device):
    """Autocast context for the training forward pass on ``device``.

    bfloat16 on CUDA devices that support it: it keeps float32's exponent
    range, so no loss scaling is needed, and autocast leaves the
    log-likelihood, softmax and reductions in float32. The CPU and MPS train
    in float32: CPUs without native bfloat16 run it slower, not faster.
    Inference and scoring always run in float32.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        # No cache of cast weights: PyTorch requires it off while a CUDA
        # graph is captured, and a step casts each weight at most twice.
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


# min_decode_proba="auto" on the CPU. On CUDA and MPS, "auto" is 0: which
# clusters a row needs is only known on the device, and sizing the sparse
# batch from it makes the host wait for the device every step, while a GPU
# has the throughput to decode every cluster of a batch at once.
_CPU_MIN_DECODE_PROBA = 0.01


def decode_threshold(min_decode_proba, device):
    """The ``min_decode_proba`` that training on ``device`` uses."""
    if min_decode_proba != "auto":
        return min_decode_proba
    return _CPU_MIN_DECODE_PROBA if device.type == "cpu" else 0.0


def adam(params, learning_rate):
    """Adam, with its fused kernel where torch has one for the device.

    The fused update does one pass over each parameter instead of a kernel
    per arithmetic step: on the paper's MNIST set-up (2-core CPU) a default
    epoch took 0.98 s instead of 1.09 s, in three interleaved runs. On CUDA
    its step count lives on the device (``capturable``), so that a CUDA
    graph can replay the update (see :class:`GraphedTrainingStep`).
    """
    params = list(params)
    options = {"capturable": True} if params and params[0].device.type == "cuda" else {}
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True, **options)
    except RuntimeError:  # no fused kernel for this device
        return torch.optim.Adam(params, lr=learning_rate, **options)


def _progress(total, verbose, desc):
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def _state_copy(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def learned_embedding(data, likelihood, device, config):
    """Embedding of ``data`` by an :class:`Autoencoder` trained on it.

    ``data`` is what the encoder sees (standardised for a Gaussian
    likelihood), on the host or on ``device``; training runs
    ``config.pretrain_iter`` epochs on ``device``. Returns a numpy array.
    """
    n = data.shape[0]
    network = Autoencoder(data.shape[1], likelihood).to(device)
    optimizer = adam(network.parameters(), config.learning_rate)
    bar = _progress(config.pretrain_iter, config.verbose, "autoencoder")
    for _ in range(config.pretrain_iter):
        total = torch.zeros((), device=device)
        for idx in _batches(n, config.batch_size, data.device):
            xb = _rows(data, idx, device)
            with mixed_precision(device):
                loss = network.reconstruction_loss(xb)
            optimizer.zero_grad(set_to_none=True)
            loss.mean().backward()
            optimizer.step()
            total += loss.detach().sum()
        if bar is not None:
            bar.set_postfix(loss=f"{float(total) / n:.4g}")
            bar.update()
    if bar is not None:
        bar.close()
    network.eval()
    with torch.no_grad():
        return _map_rows(network, data, device).float().cpu().numpy()


def _kmeans(n_clusters, seed):
    """The k-means that the starts use, and fall back on where a mixture fails."""
    return KMeans(n_clusters=n_clusters, n_init=4, random_state=seed)


def initial_assignments(embedding, n_clusters, seed):
    """k-means labels and centres of an embedding, as tensors on its device."""
    kmeans = _kmeans(n_clusters, seed)
    labels = kmeans.fit_predict(embedding.float().cpu().numpy())
    device = embedding.device
    return (
        torch.as_tensor(labels, dtype=torch.long, device=device),
        torch.as_tensor(kmeans.cluster_centers_, dtype=torch.float32, device=device),
    )


def stream_guide(module, X, centres, config):
    """Guide labels for one chunk of a stream, and the k-means centres.

    The first chunk (``centres=None``) fixes the data scaling and runs
    k-means; later chunks take the nearest of those centres. Returns
    ``(None, None)`` for ``init_params="random"``.
    """
    if centres is None:
        if not _scale_and_want_guide(module, X, config):
            return None, None
        with torch.no_grad():
            labels, centres = initial_assignments(
                _standardised(module, X), module.n_clusters, config.seed
            )
        return labels, centres.cpu().numpy()
    with torch.no_grad():
        distances = torch.cdist(_standardised(module, X), torch.as_tensor(centres, device=X.device))
    return distances.argmin(1), centres


# Weight of the guide's cross-entropy at the start, in nats per sample: large
# enough that q(c|x) takes the initial partition within the first epochs
# against an ELBO of tens to hundreds of nats.
_GUIDE_SCALE = 10.0 * 2.3


def _scale_and_want_guide(module, X, config):
    """Fix the data scaling from ``X``; say whether a guided start is wanted."""
    if module.likelihood == "gaussian":
        module.set_data_scale(*_feature_scale(X))
    return config.init_params != "random" and config.guide_iter != 0


def prepare(module, X, config):
    """Fix the data scaling of ``module`` and return the initial guide labels.

    Returns ``None`` for ``init_params="random"``.
    """
    if not _scale_and_want_guide(module, X, config):
        return None
    data = _standardised(module, X)

    def embed(rows):
        return learned_embedding(rows, module.likelihood, module.device, config)

    # Constant data have zero total variance, so the PCA inside these starts
    # (ours and t-SNE's own initialisation) computes an explained-variance
    # ratio of 0/0. Only the projections are used, and they stay finite.
    with np.errstate(divide="ignore", invalid="ignore"), _each_warning_once():
        if config.init_params == "autoencoder":
            embedding = torch.as_tensor(embed(data), device=data.device)
            return _kmeans_labels(embedding, module.n_clusters, config.seed)
        if config.init_params == "tsne":
            learn = embed if config.pretrain_iter > 0 else None
            return tsne_assignments(data, module.n_clusters, config.seed, learn)
        starts = {"spectral": spectral_assignments, "gmm": mixture_assignments}
        start = starts.get(config.init_params, _kmeans_labels)
        return start(data, module.n_clusters, config.seed)


@contextlib.contextmanager
def _each_warning_once():
    """Pass on each distinct warning raised inside only once.

    A start fits many k-means and mixtures (the mixture start twelve: four
    covariance types, three inits each), and data with fewer distinct rows
    than clusters made every one of them warn about duplicate points. Each
    warning still goes through the caller's filters, from where it was
    raised, also when the start then fails.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        passed_on = set()
        for warning in caught:
            key = (warning.category, str(warning.message))
            if key not in passed_on:
                passed_on.add(key)
                warnings.warn_explicit(
                    warning.message,
                    warning.category,
                    warning.filename,
                    warning.lineno,
                    module=_module_name(warning.filename),
                )


def _module_name(filename):
    """The imported module whose source is ``filename``, so that a filter
    naming a module (``module="sklearn"``) still matches a warning passed on
    by :func:`_each_warning_once`; None when no module has that file."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return None


def _standardised(module, X):
    """``X`` as the encoder sees it, on ``X``'s own device."""
    device = module.device
    with torch.no_grad():
        if X.device == device:  # one pass, and no copy of Bernoulli data
            return module._standardise(X)
        return _map_rows(module._standardise, X, device, batch_size=65536)


def _kmeans_labels(data, n_clusters, seed):
    return initial_assignments(data, n_clusters, seed)[0]


def spectral_assignments(data, n_clusters, seed):
    """Spectral clustering of a k-nearest-neighbour graph of ``data``.

    Follows the data's manifold where k-means only sees convex blobs: on the
    MNIST test set it starts from 0.65 accuracy where k-means gives 0.54.
    PCA to at most 50 dimensions first keeps the neighbour search cheap.
    """
    from sklearn.cluster import SpectralClustering

    values = _principal_components(data.float().cpu().numpy(), seed)
    spectral = SpectralClustering(
        n_clusters,
        affinity="nearest_neighbors",
        n_neighbors=min(10, values.shape[0] - 1),
        assign_labels="cluster_qr",
        random_state=seed,
    )
    with warnings.catch_warnings():
        # A k-NN graph of well-separated clusters is often disconnected: that
        # is the easy case for spectral clustering, not a problem.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        labels = spectral.fit_predict(values)
    return torch.as_tensor(labels, dtype=torch.long, device=data.device)


# Past this many features a full-covariance mixture has too many parameters
# and Euclidean distances concentrate: ``init_params="auto"`` switches from
# a mixture on the data to a mixture on a t-SNE map.
_AUTO_TSNE_MIN_FEATURES = 50

# t-SNE costs O(n log n) with a large constant: past this many rows it runs on
# a random subsample and the other rows take their nearest neighbour's label.
_TSNE_MAX_ROWS = 20_000

# Mixture fits on the t-SNE map, and how they are judged; see
# map_mixture_labels.
_MAP_MIXTURE_INITS = 10
_MAP_NEIGHBOURS = 10
_MAP_LOG_LIKELIHOOD_TOLERANCE = 0.002


def resolve_init(init_params, n_features):
    """The start ``init_params="auto"`` stands for, given the data's width."""
    if init_params != "auto":
        return init_params
    return "tsne" if n_features > _AUTO_TSNE_MIN_FEATURES else "gmm"


def _principal_components(values, seed, max_components=50):
    if values.shape[1] <= max_components:
        return values
    n_components = min(max_components, values.shape[0])
    return PCA(n_components, random_state=seed).fit_transform(values)


def _has_spread(values):
    """Whether the rows of ``values`` differ by more than float32 round-off."""
    return float(values.std(0).max()) > 1e-6 * (1.0 + float(np.abs(values).max()))


def _lowest_bic_mixture_labels(values, n_clusters, seed):
    """Labels of the Gaussian mixture of ``values`` with the lowest BIC
    among ``_DATA_COVARIANCE_TYPES``."""
    best, best_bic = None, np.inf
    for covariance_type in _DATA_COVARIANCE_TYPES:
        mixture = GaussianMixture(
            n_clusters, covariance_type=covariance_type, n_init=3, random_state=seed
        )
        try:
            mixture.fit(values)
        except ValueError:
            # A component collapsed onto duplicated points (its covariance
            # is singular even after regularisation).
            continue
        bic = mixture.bic(values)
        if bic < best_bic:
            best, best_bic = mixture, bic
    if best is None:  # k-means has no covariances to collapse
        return _kmeans(n_clusters, seed).fit_predict(values)
    return best.predict(values)


# A full covariance per cluster has d(d+1)/2 parameters, more than small
# tabular data can pin down: on wine (178 x 13) full-covariance starts ended
# at 0.961 median accuracy over seeds 5-14, below k-means' 0.966. BIC picks
# diagonal covariances there (0.972) and keeps full ones on breast cancer
# and iris, where they are best (benchmarks/results/).
_DATA_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def mixture_assignments(data, n_clusters, seed):
    """Clusters of the Gaussian mixture of ``data`` (PCA to <= 50) whose
    covariance structure has the lowest BIC."""
    values = _principal_components(data.float().cpu().numpy(), seed)
    labels = _lowest_bic_mixture_labels(values, n_clusters, seed)
    return torch.as_tensor(labels, dtype=torch.long, device=data.device)


def tsne_map(values, seed):
    """The 2-D t-SNE map of ``values`` that the ``"tsne"`` start clusters."""
    return TSNE(
        2,
        perplexity=min(30.0, (len(values) - 1) / 3.0),
        init="pca",
        max_iter=500,
        random_state=seed,
    ).fit_transform(values)


def tsne_features(values, data=None, embed=None):
    """What the ``"tsne"`` start maps: principal components ``values``,
    joined by ``embed(data)`` when an embedding is learned.

    Each block is centred and scaled to a mean squared norm of 1, so both
    weigh equally in t-SNE's distances. On the MNIST test set the start
    reached 0.94 accuracy with both, 0.87 with the components alone and
    0.91 to 0.93 with the embedding alone. On digits, whose components
    alone already separate the classes, both gave 0.93 against 0.94
    (medians of full default fits, ``benchmarks/results/``).
    """
    if embed is None:
        return values
    return np.hstack([_unit_mean_square(values), _unit_mean_square(embed(data))])


def _unit_mean_square(values):
    centred = values - values.mean(0)
    norm = np.sqrt((centred**2).sum(1).mean())
    return centred / max(float(norm), np.finfo(np.float32).tiny)


def tsne_assignments(data, n_clusters, seed, embed=None):
    """Gaussian-mixture clusters of a 2-D t-SNE map of ``data``.

    t-SNE keeps each point's neighbourhood, so the classes of image data
    (MNIST, digits) come out as separate islands of arbitrary shape, which a
    full-covariance mixture separates where k-means on the raw pixels cannot.
    ``embed`` (rows of ``data`` to a numpy array) adds a learned embedding
    to the principal components the map is made of; see :func:`tsne_features`.
    """
    values = _principal_components(data.float().cpu().numpy(), seed)
    if not _has_spread(values):
        # scikit-learn's Barnes-Hut t-SNE crashes the interpreter
        # (segmentation fault) when every point is the same.
        return _kmeans_labels(data, n_clusters, seed)
    n_samples = values.shape[0]
    subset = np.arange(n_samples)
    if n_samples > _TSNE_MAX_ROWS:
        rng = np.random.default_rng(seed)
        subset = np.sort(rng.choice(n_samples, _TSNE_MAX_ROWS, replace=False))
    rows = torch.as_tensor(subset, device=data.device)
    embedding = tsne_map(tsne_features(values[subset], data[rows], embed), seed)
    labels = map_mixture_labels(embedding, n_clusters, seed)
    if len(subset) < n_samples:
        neighbours = KNeighborsClassifier(1).fit(values[subset], labels)
        labels = neighbours.predict(values)
    return torch.as_tensor(labels, dtype=torch.long, device=data.device)


def map_mixture_labels(embedding, n_clusters, seed):
    """Gaussian-mixture clusters of a t-SNE map; see :func:`chosen_map_fit`."""
    fits = map_mixture_fits(embedding, n_clusters, seed)
    if not fits:
        return _kmeans(n_clusters, seed).fit_predict(embedding)
    return chosen_map_fit(fits)[2]


def map_mixture_fits(embedding, n_clusters, seed):
    """``_MAP_MIXTURE_INITS`` mixture fits of a map, as ``(log-likelihood per
    point, share of the map's nearest-neighbour edges cut, labels)``."""
    edges = map_neighbour_edges(embedding)
    rng = np.random.RandomState(seed)
    fits = []
    for _ in range(_MAP_MIXTURE_INITS):
        mixture = GaussianMixture(n_clusters, random_state=rng.randint(np.iinfo(np.int32).max))
        try:
            labels = mixture.fit(embedding).predict(embedding)
        except ValueError:  # a component collapsed onto duplicated points
            continue
        fits.append((mixture.score(embedding), share_of_edges_cut(labels, edges), labels))
    return fits


def map_neighbour_edges(embedding):
    """Each point's ``_MAP_NEIGHBOURS`` nearest neighbours on the map, (n, k)."""
    neighbours = NearestNeighbors(n_neighbors=min(_MAP_NEIGHBOURS + 1, len(embedding)))
    return neighbours.fit(embedding).kneighbors(embedding, return_distance=False)[:, 1:]


def share_of_edges_cut(labels, edges):
    """Share of the ``edges`` from :func:`map_neighbour_edges` joining two clusters."""
    return (labels[edges] != labels[:, None]).mean()


def chosen_map_fit(fits, tolerance=_MAP_LOG_LIKELIHOOD_TOLERANCE):
    """The fit the start keeps, of those :func:`map_mixture_fits` returns.

    t-SNE draws classes as islands, and a mixture can split a long island
    and merge two others at nearly the same likelihood. So the fits within
    ``tolerance`` nats per point of the likeliest are candidates, and the
    one whose clusters cut fewest of the map's nearest-neighbour edges wins
    (ties to the likelier). Of 16 fits on one MNIST map the likeliest split
    the 1s and merged 5 with 8 (0.809 accuracy), 0.0013 nats per point above
    fits that found the islands; the rule keeps a 0.945 fit. On the 10 MNIST
    and 13 digits maps of ``benchmarks/results/mnist_start.md`` it keeps fits
    at most 0.002 less accurate than the likeliest, and up to 0.010 more. A
    looser limit trades likelihood for cut edges too freely: at 0.005 it kept
    a 0.832 fit, 0.0041 nats per point below a likeliest one of 0.948, and
    with no limit fits of 0.816 to 0.865 on 6 of the 23 maps.
    """
    likeliest = max(log_likelihood for log_likelihood, _, _ in fits)
    candidates = [fit for fit in fits if fit[0] >= likeliest - tolerance]
    return min(candidates, key=lambda fit: (fit[1], -fit[0]))


def _feature_scale(X):
    """Per-feature mean and standard deviation; 1 for constant features."""
    mean = X.mean(0)
    std = X.std(0)
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        # Sums and squares of values near float32's limit overflow; those of
        # X / max|X| cannot, and the result scales back within range.
        peak = X.abs().amax(0).clamp_min(torch.finfo(X.dtype).tiny)
        scaled = X / peak
        mean, std = scaled.mean(0) * peak, scaled.std(0) * peak
    return mean, torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))


def _balance_penalty(resp):
    """KL(mean_batch q(c|x) || uniform): zero when clusters are used equally."""
    mean_resp = resp.mean(0).clamp_min(1e-12)
    return (mean_resp * torch.log(mean_resp * resp.shape[1])).sum()


def training_step(module, optimizer, xb, config, guide_labels=None, guide_weight=0.0):
    """One optimizer step on the batch ``xb`` (already on the module's device).

    On the CPU the gradient is worked out by hand (see ``_gradients.py``):
    there, each operation autograd records costs microseconds of overhead
    besides its arithmetic. Elsewhere autograd differentiates the loss, under
    mixed precision where the device supports it.

    Returns the batch's summed negative ELBO as a device tensor: reading it
    would make the host wait for the device, so callers add the steps up
    and read the total once per epoch.
    """
    if xb.device.type != "cpu":
        return _autograd_training_step(module, optimizer, xb, config, guide_labels, guide_weight)
    # No zero_grad before: the hand-worked gradient sets every parameter's .grad.
    negative_elbo = _hand_gradients(module, xb, config, guide_labels, guide_weight)
    optimizer.step()
    # Those gradients are inference tensors, which autograd could not add to
    # later (a warm start on another device, say): none is left behind.
    optimizer.zero_grad(set_to_none=True)
    return negative_elbo


def _hand_gradients(module, xb, config, guide_labels, guide_weight):
    """Set the gradient of the training loss by hand; return the batch's
    summed negative ELBO."""
    return loss_and_gradients(
        module,
        xb,
        min_decode_proba=decode_threshold(config.min_decode_proba, xb.device),
        info_weight=config.info_weight,
        info_per_cluster=_info_per_cluster(config, module),
        balance_weight=config.balance_weight,
        guide_labels=guide_labels,
        guide_weight=guide_weight * _GUIDE_SCALE,
    )


def _info_per_cluster(config, module):
    """Prior draws per cluster for the information term: about a batch in all."""
    return max(1, config.batch_size // module.n_clusters)


def _autograd_loss(module, xb, config, guide_labels, guide_weight):
    """The training loss, as a graph for autograd, and each row's negative ELBO."""
    device = xb.device
    with mixed_precision(device):
        out = module.elbo(xb, min_decode_proba=decode_threshold(config.min_decode_proba, device))
        negative_elbo = -out["elbo"]
        loss = negative_elbo.mean()
        if config.info_weight > 0:
            info_loss = module.information_loss(_info_per_cluster(config, module))
            loss = loss + config.info_weight * info_loss
        if config.balance_weight > 0:
            loss = loss + config.balance_weight * _balance_penalty(out["resp"])
        # Labels, not a positive weight, switch the guide on: a CUDA graph
        # takes its weight as a tensor that it cannot branch on.
        if guide_labels is not None:
            loss = loss + guide_weight * _GUIDE_SCALE * F.cross_entropy(
                out["logits"], guide_labels
            )
    return loss, negative_elbo


def _autograd_training_step(module, optimizer, xb, config, guide_labels, guide_weight):
    """:func:`training_step` with the gradient from autograd."""
    loss, negative_elbo = _autograd_loss(module, xb, config, guide_labels, guide_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return negative_elbo.detach().sum()


# A CUDA step launches several hundred kernels, each costing microseconds of
# host work, and on the paper's MNIST set-up those launches, not the
# arithmetic, set its time: the same training on 8 features through 4 units
# took as long (benchmarks/results/speed_cuda.md). Replayed from a CUDA
# graph, a step is one launch: on an H200 0.60 ms instead of 5.5 ms
# (benchmarks/results/cuda_step_probe.md).
_CUDA_GRAPHS = True
# Eager steps before the capture, so that the optimizer's state and the
# kernels' workspaces exist when it starts (PyTorch's recipe).
_GRAPH_WARM_UP_STEPS = 3


def step_function(module, optimizer, config, guided):
    """What :func:`train` calls for each batch, ``step(xb, guide_labels,
    guide_weight)``: :func:`training_step`, replayed from a CUDA graph where
    the module is on CUDA, the optimizer can be captured and the step
    decodes every cluster (sparse decoding sizes its work from q(c|x), which
    a graph cannot). A module on another GPU than the current one trains
    eagerly: a graph captures the current device's stream only, and that path
    has not run on a machine with several GPUs."""
    if (
        _CUDA_GRAPHS
        and module.device.type == "cuda"
        and module.device.index in (None, torch.cuda.current_device())
        and decode_threshold(config.min_decode_proba, module.device) == 0
        and all(group.get("capturable") for group in optimizer.param_groups)
    ):
        return GraphedTrainingStep(module, optimizer, config, guided)
    return _eager_step(module, optimizer, config)


def _eager_step(module, optimizer, config):
    def step(xb, guide_labels, guide_weight):
        # Looked up at each call, so that the tests can wrap it.
        return training_step(module, optimizer, xb, config, guide_labels, guide_weight)

    return step


class GraphedTrainingStep:
    """:func:`training_step` on CUDA, replayed from a CUDA graph.

    The first ``_GRAPH_WARM_UP_STEPS`` full batches train eagerly on a side
    stream; the next is captured, and it and every later full batch are
    copied into the graph's input and replayed. A last, smaller batch trains
    eagerly. The graph draws its random numbers from the same CUDA
    generator, advanced at each replay, and takes the guide's weight as a
    device tensor, so that it may change between epochs.

    Should the capture fail (an operation that some torch release cannot
    capture, say), training goes on eagerly and a warning says so.
    """

    def __init__(self, module, optimizer, config, guided):
        self.module, self.optimizer, self.config = module, optimizer, config
        self._eager = _eager_step(module, optimizer, config)
        device = module.device
        self._x = torch.zeros(config.batch_size, module.n_features, device=device)
        self._labels = (
            torch.zeros(config.batch_size, dtype=torch.long, device=device) if guided else None
        )
        self._guide_weight = torch.zeros((), device=device)
        self._warm_up_left = _GRAPH_WARM_UP_STEPS
        self._side_stream = None
        self._graph, self._negative_elbo, self._failed = None, None, False

    def __call__(self, xb, guide_labels, guide_weight):
        if self._failed or xb.shape[0] != self.config.batch_size:
            return self._eager(xb, guide_labels, guide_weight)
        if self._warm_up_left > 0:
            self._warm_up_left -= 1
            return self._on_side_stream(xb, guide_labels, guide_weight)
        self._x.copy_(xb)
        if self._labels is not None:
            if guide_labels is not None:
                self._labels.copy_(guide_labels)
            # train() passes no labels once the guide's weight reaches 0.
            self._guide_weight.fill_(guide_weight if guide_labels is not None else 0.0)
        if self._graph is None and not self._capture():
            return self._eager(xb, guide_labels, guide_weight)
        self._graph.replay()
        # A copy: the next replay overwrites the graph's output.
        return self._negative_elbo.clone()

    def _on_side_stream(self, xb, guide_labels, guide_weight):
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.module.device)
        current = torch.cuda.current_stream(self.module.device)
        self._side_stream.wait_stream(current)
        with torch.cuda.stream(self._side_stream):
            negative_elbo = self._eager(xb, guide_labels, guide_weight)
        current.wait_stream(self._side_stream)
        return negative_elbo

    def _capture(self):
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                negative_elbo = _autograd_training_step(
                    self.module, self.optimizer, self._x, self.config, self._labels,
                    self._guide_weight,
                )
        except RuntimeError as exc:
            self._failed = True
            warnings.warn(
                f"Capturing the training step in a CUDA graph failed ({exc}); training "
                "continues without it, with one kernel launch per operation.",
                RuntimeWarning,
                stacklevel=4,
            )
            return False
        self._graph, self._negative_elbo = graph, negative_elbo
        return True


def _guide_weight(guide, guide_iter, epoch):
    if guide is None or guide_iter == 0:
        return 0.0
    if guide_iter is None:
        return 1.0
    return max(0.0, 1.0 - epoch / guide_iter)


def evaluate_negative_elbo(module, X, batch_size=4096):
    """Mean negative ELBO of ``X`` in nats, with fresh reparameterisation noise."""
    device = module.device
    total = torch.zeros((), device=device)
    with torch.no_grad():
        for idx in _batches(X.shape[0], batch_size, X.device, shuffle=False):
            total += -module.elbo(_rows(X, idx, device))["elbo"].sum()
    return float(total) / X.shape[0]


def train(module, X, X_val, config, optimizer=None, guide=None, guide_offset=0):
    """Fit ``module`` to ``X`` (a tensor on the training device).

    Stops after ``max_iter`` epochs, or when the monitored loss (validation
    loss when ``X_val`` is given, training loss otherwise) has not improved by
    ``tol`` for ``n_iter_no_change`` epochs. With validation data the best
    weights are restored at the end.

    A non-finite epoch loss rolls the weights back to the start of that epoch
    and stops with a ``ConvergenceWarning``; ``KeyboardInterrupt`` likewise
    keeps the best weights so far and returns. If the very first epoch is
    non-finite, :class:`TrainingDivergedError` is raised.

    ``guide`` holds labels for the rows of ``X`` that q(c|x) is steered
    towards. Its weight stays 1 when ``config.guide_iter`` is None, and
    otherwise falls linearly from 1 to 0 over ``config.guide_iter`` epochs, of
    which ``guide_offset`` already passed.

    Returns the :class:`TrainingResult` and the optimizer (for warm starts).
    """
    n = X.shape[0]
    device = module.device
    if optimizer is None:
        optimizer = adam(module.parameters(), config.learning_rate)

    step = step_function(module, optimizer, config, guided=guide is not None)
    result = TrainingResult(loss_curve=[], validation_scores=[], n_iter=0)
    best_loss, best_state, epochs_without_improvement = math.inf, None, 0
    bar = _progress(config.max_iter, config.verbose, "InfoCatVAE")
    try:
        for epoch in range(config.max_iter):
            epoch_start_state = _state_copy(module)
            guide_weight = _guide_weight(guide, config.guide_iter, epoch + guide_offset)
            total = torch.zeros((), device=device)
            for idx in _batches(n, config.batch_size, X.device):
                guide_labels = _rows(guide, idx, device) if guide_weight > 0 else None
                total += step(_rows(X, idx, device), guide_labels, guide_weight)

            epoch_loss = float(total) / n
            if not math.isfinite(epoch_loss):
                module.load_state_dict(epoch_start_state)
                if epoch == 0:
                    raise TrainingDivergedError(
                        "The training loss became non-finite in the first epoch. "
                        "Lower learning_rate_init, or standardise the data "
                        "(e.g. with StandardScaler)."
                    )
                result.diverged = True
                warnings.warn(
                    f"The training loss became non-finite at epoch {epoch + 1}; "
                    "the weights were rolled back to the end of the previous "
                    "epoch and training stopped. Lower learning_rate_init to "
                    "train further.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
                break
            result.loss_curve.append(epoch_loss)
            result.n_iter = epoch + 1
            if X_val is not None:
                monitored = evaluate_negative_elbo(module, X_val)
                result.validation_scores.append(-monitored)
            else:
                monitored = epoch_loss
            if bar is not None:
                bar.set_postfix(loss=f"{epoch_loss:.4g}")
                bar.update()

            # While the guide's weight falls, the objective itself changes each
            # epoch, so its losses are not compared for stopping.
            if guide_weight > 0 and config.guide_iter is not None:
                continue
            if monitored < best_loss - config.tol * max(1.0, abs(best_loss)):
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            if monitored < best_loss:
                best_loss = monitored
                if X_val is not None:
                    best_state = _state_copy(module)
            if epochs_without_improvement >= config.n_iter_no_change:
                break
    except torch.OutOfMemoryError as exc:
        raise MemoryError(
            f"The {device.type.upper()} device ran out of memory training with "
            f"batch_size={config.batch_size}; lower batch_size or "
            "hidden_layer_sizes, or fit on the CPU (device='cpu')."
        ) from exc
    except KeyboardInterrupt:
        result.interrupted = True
        if result.n_iter == 0:
            raise
        module.load_state_dict(best_state if best_state is not None else epoch_start_state)
        warnings.warn(
            f"Training was interrupted after {result.n_iter} epoch(s); the "
            "estimator keeps the best weights reached so far.",
            ConvergenceWarning,
            stacklevel=3,
        )
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None and not result.interrupted:
        module.load_state_dict(best_state)
    return result, optimizer


def to_tensor(X, device):
    """float32 tensor of a numpy array on ``device`` (no copy when possible)."""
    return torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=device)


def map_batches(fn, X, device, batch_size):
    """Apply ``fn`` (tensor -> tensor or tuple of tensors) to ``X`` in batches.

    Only one batch is on the device at a time; results come back as numpy
    arrays concatenated along the first axis. Memory beyond the outputs is
    bounded by ``batch_size``.
    """
    outputs = None
    n = X.shape[0]
    with torch.no_grad():
        for start in range(0, n, batch_size):
            result = fn(to_tensor(X[start : start + batch_size], device))
            parts = result if isinstance(result, tuple) else (result,)
            if outputs is None:
                outputs = [
                    np.empty((n,) + tuple(p.shape[1:]), dtype=_numpy_dtype(p))
                    for p in parts
                ]
            for out, p in zip(outputs, parts):
                out[start : start + p.shape[0]] = p.cpu().numpy()
    return outputs if isinstance(result, tuple) else outputs[0]


def _numpy_dtype(tensor):
    return np.int64 if tensor.dtype == torch.long else np.float32


def fixed_noise(shape, device, seed=0):
    """Standard normal draws that are the same on every call and device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(device)
