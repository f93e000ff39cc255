"""Fitting a :class:`~catvae_sklearn._model.CategoricalVAE`: the guide from
the start, the epoch loop, early stopping and roll-back.

:func:`train` runs epochs of :func:`training_step` (or its replay from a
CUDA graph, chosen once per call by :func:`step_function`) and decides after
each whether to stop, in the manner of scikit-learn's stochastic MLP
solver. The autoencoder behind the ``"tsne"`` and ``"autoencoder"`` starts
trains through the same epoch function.
"""

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from sklearn.exceptions import ConvergenceWarning

from ._cuda_graph import GraphedTrainingStep, can_capture
from ._device import (
    batches,
    map_batches,
    mixed_precision,
    pair_multiple,
    rows,
    seeded,
    to_tensor,
)
from ._model import Autoencoder
from ._starts import (
    STARTS,
    kmeans_centres,
    nearest_centres,
    pretrain_epochs,
    start_features,
    start_labels,
)
from ._threads import rebalance

# Rows per batch when the whole training set is mapped through a network
# (its standardised form, an autoencoder's embedding, a validation ELBO).
_MAP_BATCH_ROWS = 4096

# Adam's rate for the start's autoencoder, whatever ``learning_rate_init``
# says: the start's partition is what the guide then holds training to, so
# it stays the one this rate gives while the model's own rate is chosen for
# training, and a search over ``learning_rate_init`` reuses one cached start.
AUTOENCODER_LEARNING_RATE = 1e-3

# Prior draws per training step for the information term, at most: as many
# as the batch has rows up to this. The term is an expectation under the
# prior, not over the data, so a larger batch does not need more draws to
# estimate it, and each draw costs a decode and a re-encode.
INFO_DRAWS_PER_STEP = 128


class TrainingDivergedError(ValueError):
    """The loss became non-finite before any finite state was reached."""


@dataclass
class TrainingConfig:
    """What one call of :func:`train` (and the start before it) needs.

    ``min_decode_proba`` is the value for the training device (see
    :func:`~catvae_sklearn._device.decode_threshold`); ``cpu_bfloat16`` is
    :func:`~catvae_sklearn._device.cpu_bfloat16_pays`'s answer; ``cuda_graph`` asks
    for the step to be replayed from a CUDA graph where it can be.
    """

    batch_size: int
    learning_rate: float
    max_iter: int
    tol: float
    n_iter_no_change: int
    info_weight: float
    balance_weight: float
    min_decode_proba: float
    pretrain_iter: int | str
    guide_iter: int | None
    seed: int
    cpu_bfloat16: bool = False
    verbose: int = 0
    cuda_graph: bool = False


@dataclass
class TrainingResult:
    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    n_iter: int = 0
    interrupted: bool = False
    diverged: bool = False


def adam(params, learning_rate):
    """Adam, with its fused kernel where torch has one for the device.

    The fused update does one pass over each parameter instead of a kernel
    per arithmetic step. On CUDA its step count lives on the device
    (``capturable``), so that a CUDA graph can replay the update.
    """
    params = list(params)
    options = {"capturable": True} if params and params[0].device.type == "cuda" else {}
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True, **options)
    except RuntimeError:  # no fused kernel for this device
        return torch.optim.Adam(params, lr=learning_rate, **options)


def feature_scale(X):
    """Per-feature mean and standard deviation of the tensor ``X``; 1 for
    constant features."""
    mean = X.mean(0)
    std = X.std(0)
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
        # Sums and squares of values near float32's limit overflow; those of
        # X / max|X| cannot, and the result scales back within range.
        peak = X.abs().amax(0).clamp_min(torch.finfo(X.dtype).tiny)
        scaled = X / peak
        mean, std = scaled.mean(0) * peak, scaled.std(0) * peak
    return mean, torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))


# ------------------------------------------------------------------- steps
def training_step(module, optimizer, xb, config, guide_labels=None, guide_weight=0.0):
    """One optimizer step on the batch ``xb`` (already on the module's device).

    Autograd differentiates :meth:`CategoricalVAE.training_loss`, under
    mixed precision where the device supports it. Returns the batch's summed
    negative ELBO as a device tensor: reading it would make the host wait
    for the device, so callers add the steps up and read the total once
    per epoch.
    """
    with mixed_precision(xb.device, on_cpu=config.cpu_bfloat16):
        loss, negative_elbo = module.training_loss(
            xb,
            min_decode_proba=config.min_decode_proba,
            pair_multiple=pair_multiple(config.cpu_bfloat16, config.batch_size),
            info_weight=config.info_weight,
            info_per_cluster=max(1, min(config.batch_size, INFO_DRAWS_PER_STEP)
                                 // module.n_clusters),
            balance_weight=config.balance_weight,
            guide_labels=guide_labels,
            guide_weight=guide_weight,
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return negative_elbo.detach().sum()


def step_function(module, optimizer, config, guided):
    """What :func:`train` calls for each batch, ``step(xb, guide_labels,
    guide_weight)``: :func:`training_step`, replayed from a CUDA graph when
    ``config.cuda_graph`` asks for it and the step can be captured."""

    def eager(xb, guide_labels, guide_weight):
        # Looked up at each call, so that the tests can wrap it.
        return training_step(module, optimizer, xb, config, guide_labels, guide_weight)

    if config.cuda_graph and can_capture(module, optimizer, config.min_decode_proba):
        return GraphedTrainingStep(eager, module, config.batch_size, guided)
    return eager


def run_epoch(step, X, batch_size, device, guide=None, guide_weight=0.0):
    """One pass of ``step`` over the rows of ``X`` in shuffled batches;
    the mean of what the steps return, per row."""
    rebalance()
    total = torch.zeros((), device=device)
    for idx in batches(X.shape[0], batch_size, X.device):
        guide_labels = rows(guide, idx, device) if guide_weight > 0 else None
        total += step(rows(X, idx, device), guide_labels, guide_weight)
    return float(total) / X.shape[0]


def guide_schedule(guide, guide_iter, epoch):
    """Weight of the guide in ``epoch``: 1 throughout when ``guide_iter`` is
    None, else falling linearly to 0 over ``guide_iter`` epochs."""
    if guide is None or guide_iter == 0:
        return 0.0
    if guide_iter is None:
        return 1.0
    return max(0.0, 1.0 - epoch / guide_iter)


# ------------------------------------------------------------------ phases
class Phases:
    """Wall-clock seconds of each phase of a fit; with ``verbose``, a line
    as each ends. A phase timed inside another (the autoencoder inside the
    map) is not counted in its parent's seconds."""

    def __init__(self, verbose=0):
        self.verbose, self.seconds, self._children = verbose, {}, [0.0]

    @contextlib.contextmanager
    def __call__(self, name):
        """Time the phase ``name``; what it yields takes a ``note`` for the line."""
        rebalance()
        start = time.perf_counter()
        self._children.append(0.0)
        phase = SimpleNamespace(note="")
        try:
            yield phase
        finally:
            elapsed = time.perf_counter() - start
            own = elapsed - self._children.pop()
            self._children[-1] += elapsed
            self.seconds[name] = self.seconds.get(name, 0.0) + own
            if self.verbose:
                print(f"[InfoCatVAE] {name}: {own:.1f} s{phase.note}", flush=True)


# ------------------------------------------------------------------ starts
def learned_embedding(data, likelihood, device, epochs, batch_size, learning_rate, verbose=0):
    """Embedding of ``data`` (a numpy array, as the encoder sees it) by an
    :class:`Autoencoder` trained ``epochs`` epochs on it on ``device``, and
    the weight and bias of that autoencoder's first layer, all numpy arrays."""
    X = to_tensor(data, device)
    network = Autoencoder(data.shape[1], likelihood).to(device)
    optimizer = adam(network.parameters(), learning_rate)

    def step(xb, guide_labels, guide_weight):
        with mixed_precision(device, on_cpu=True):
            loss = network.reconstruction_loss(xb)
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()
        return loss.detach().sum()

    bar = _progress(epochs, verbose, "autoencoder")
    for _ in range(epochs):
        _advance(bar, run_epoch(step, X, batch_size, device))
    _close(bar)
    network.eval()
    first_layer = network.encoder[0][0]
    return (map_batches(network, X, device, _MAP_BATCH_ROWS),
            (first_layer.weight.detach().cpu().numpy(), first_layer.bias.detach().cpu().numpy()))


def _encoder_input(module, X):
    """The rows of the tensor ``X`` as the encoder sees them, as a numpy array."""
    if X.device == module.device:  # one pass, and no copy of Bernoulli data on the CPU
        with torch.no_grad():
            return module._standardise(X).cpu().numpy()
    return map_batches(module._standardise, X, module.device, 16 * _MAP_BATCH_ROWS)


def guide_features(init_params, data, seed, likelihood, device, pretrain_iter, batch_size,
                   verbose=0, phases=None, ran=None):
    """Step one of the start (see ``_starts``), the autoencoder included:
    everything the start computes before ``n_clusters`` matters. A function
    of its arguments alone (the autoencoder trains from ``seed`` and leaves
    the caller's random state as it was), so that a ``joblib.Memory`` can
    cache it across a search; ``verbose``, ``phases`` and ``ran`` (a list
    it appends to when it computes rather than the cache) only report.
    Returns the features and, when an autoencoder was trained, the weight
    and bias of its first layer (else None)."""
    if ran is not None:
        ran.append(True)
    phases = Phases() if phases is None else phases
    device = torch.device(device)
    epochs = pretrain_epochs(pretrain_iter, init_params, data, seed)
    first_layer = []

    def embed(rows_):
        with phases("autoencoder"):
            embedding, layer = learned_embedding(rows_, likelihood, device, epochs, batch_size,
                                                 AUTOENCODER_LEARNING_RATE, verbose)
        first_layer.append(layer)
        return embedding

    learns = epochs > 0 and STARTS[init_params].embeds
    if verbose and not learns and pretrain_iter == "auto" and STARTS[init_params].embeds:
        print("[InfoCatVAE] autoencoder: skipped, the principal components keep nearly all "
              "the variance (pretrain_iter='auto')", flush=True)
    with seeded(seed, device):
        values = start_features(init_params, data, seed, embed if learns else None)
    return values, (first_layer[-1] if first_layer else None)


def guide_labels(init_params, values, n_clusters, seed, ran=None):
    """Step two of the start (:func:`~catvae_sklearn._starts.start_labels`),
    cacheable like :func:`guide_features`: the labels depend on
    ``n_clusters`` but not on ``subspace_dim``, so a search reads them back
    for its other subspace dimensions. ``ran`` only reports."""
    if ran is not None:
        ran.append(True)
    return start_labels(init_params, values, n_clusters, seed)


def initial_guide(module, X, init_params, config, memory, phases):
    """Labels of the start ``init_params`` for the rows of ``X``, on ``X``'s
    device; None for ``"random"`` or when the guide is off (``guide_iter=0``).
    Where the start trains an autoencoder, ``module``'s encoder also starts
    from that autoencoder's first layer.

    Both steps go through ``memory`` (a ``joblib.Memory``), so a search that
    refits on the same rows with another ``n_clusters`` or ``subspace_dim``
    reads step one back instead of computing it again, and step two too
    where only ``subspace_dim`` changed.
    """
    if not guided(init_params, config.guide_iter):
        return None
    data = _encoder_input(module, X)
    features = memory.cache(guide_features, ignore=["verbose", "phases", "ran"])
    ran = []
    with phases("map" if init_params == "tsne" else "features") as phase:
        values, first_layer = features(
            init_params, data, config.seed, module.likelihood, str(module.device),
            config.pretrain_iter, config.batch_size,
            verbose=config.verbose, phases=phases, ran=ran,
        )
        phase.note = "" if ran else " (cached)"
    if first_layer is not None:
        module.start_trunk_from(*first_layer)
    labels_of = memory.cache(guide_labels, ignore=["ran"])
    ran = []
    with phases("mixture" if init_params in ("tsne", "gmm") else "clusters") as phase:
        labels = labels_of(init_params, values, module.n_clusters, config.seed, ran=ran)
        phase.note = "" if ran else " (cached)"
    return torch.as_tensor(labels, dtype=torch.long, device=X.device)


def stream_guide(module, X, centres, seed):
    """Guide labels for one chunk ``X`` of a stream, and the k-means centres.

    The first chunk (``centres=None``) runs k-means; later chunks take the
    nearest of its centres.
    """
    data = _encoder_input(module, X)
    if centres is None:
        labels, centres = kmeans_centres(data, module.n_clusters, seed)
    else:
        labels = nearest_centres(data, centres)
    return torch.as_tensor(labels, dtype=torch.long, device=X.device), centres


def current_partition_guide(clusters, X):
    """Guide labels for training that continues on the rows of ``X`` (a
    tensor): ``clusters``, the clusters the model gives them now, as a
    tensor on ``X``'s device.

    The start's labels belong to the rows they were computed for and are
    not kept, and training without a guide drifts away from the partition
    it was held to, so a continued fit holds the one it continues from.
    """
    return torch.as_tensor(clusters, dtype=torch.long, device=X.device)


def guided(init_params, guide_iter):
    """Whether training with these parameters has a guide at all."""
    return init_params != "random" and guide_iter != 0


# -------------------------------------------------------------------- loop
class _NoImprovement:
    """Counts epochs whose monitored loss failed to improve the best by
    ``tol`` (relative), like scikit-learn's ``_update_no_improvement_count``;
    keeps a copy of the best weights when ``keep_best``."""

    def __init__(self, tol, keep_best):
        self.tol, self.keep_best = tol, keep_best
        self.best_loss, self.best_state, self.count = math.inf, None, 0

    def update(self, loss, module):
        if loss < self.best_loss - self.tol * max(1.0, abs(self.best_loss)):
            self.count = 0
        else:
            self.count += 1
        if loss < self.best_loss:
            self.best_loss = loss
            if self.keep_best:
                self.best_state = _state_copy(module)
        return self.count


def evaluate_negative_elbo(module, X):
    """Mean negative ELBO of ``X`` in nats, with fresh reparameterisation noise."""
    elbo = map_batches(lambda xb: module.elbo(xb)["elbo"], X, module.device, _MAP_BATCH_ROWS)
    return -float(elbo.astype("float64").mean())


def train(module, X, X_val, config, optimizer=None, guide=None, guide_offset=0):
    """Fit ``module`` to ``X`` (a tensor on the training device or the host).

    Stops after ``max_iter`` epochs, or when the monitored loss (validation
    loss when ``X_val`` is given, training loss otherwise) has not improved by
    ``tol`` for ``n_iter_no_change`` epochs. With validation data the best
    weights are restored at the end.

    A non-finite epoch loss rolls the weights back to the start of that epoch
    and stops with a ``ConvergenceWarning``; ``KeyboardInterrupt`` likewise
    keeps the best weights so far and returns. If the very first epoch is
    non-finite, :class:`TrainingDivergedError` is raised.

    ``guide`` holds labels for the rows of ``X`` that q(c|x) is steered
    towards, weighted by :func:`guide_schedule` (of whose epochs
    ``guide_offset`` already passed). While that weight falls, the objective
    itself changes each epoch, so those epochs do not count for stopping.

    Returns the :class:`TrainingResult` and the optimizer (for warm starts).
    """
    device = module.device
    if optimizer is None:
        optimizer = adam(module.parameters(), config.learning_rate)
    step = step_function(module, optimizer, config, guided=guide is not None)
    result = TrainingResult()
    no_improvement = _NoImprovement(config.tol, keep_best=X_val is not None)
    bar = _progress(config.max_iter, config.verbose, "InfoCatVAE")
    epoch_start_state = None
    try:
        for epoch in range(config.max_iter):
            epoch_start_state = _state_copy(module)
            guide_weight = guide_schedule(guide, config.guide_iter, epoch + guide_offset)
            loss = run_epoch(step, X, config.batch_size, device, guide, guide_weight)
            if not math.isfinite(loss):
                module.load_state_dict(epoch_start_state)
                result.diverged = _diverged(epoch)
                break
            result.loss_curve.append(loss)
            result.n_iter = epoch + 1
            monitored = loss
            if X_val is not None:
                monitored = evaluate_negative_elbo(module, X_val)
                result.validation_scores.append(-monitored)
            _advance(bar, loss)
            if guide_weight > 0 and config.guide_iter is not None:
                continue
            if no_improvement.update(monitored, module) >= config.n_iter_no_change:
                break
    except torch.OutOfMemoryError as exc:
        raise MemoryError(
            f"The {device.type.upper()} device ran out of memory training with "
            f"batch_size={config.batch_size}; lower batch_size or "
            "hidden_layer_sizes, or fit on the CPU (device='cpu')."
        ) from exc
    except KeyboardInterrupt:
        if result.n_iter == 0:
            raise
        result.interrupted = True
        module.load_state_dict(no_improvement.best_state or epoch_start_state)
        warnings.warn(
            f"Training was interrupted after {result.n_iter} epoch(s); the "
            "estimator keeps the best weights reached so far.",
            ConvergenceWarning,
            stacklevel=3,
        )
    finally:
        _close(bar)
    if no_improvement.best_state is not None and not result.interrupted:
        module.load_state_dict(no_improvement.best_state)
    return result, optimizer


def _diverged(epoch):
    """Raise for a first epoch gone non-finite; warn and return True for a later one."""
    if epoch == 0:
        raise TrainingDivergedError(
            "The training loss became non-finite in the first epoch. "
            "Lower learning_rate_init, or standardise the data "
            "(e.g. with StandardScaler)."
        )
    warnings.warn(
        f"The training loss became non-finite at epoch {epoch + 1}; "
        "the weights were rolled back to the end of the previous "
        "epoch and training stopped. Lower learning_rate_init to "
        "train further.",
        ConvergenceWarning,
        stacklevel=4,
    )
    return True


def _state_copy(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _progress(total, verbose, desc):
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def _advance(bar, loss):
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.4g}")
        bar.update()


def _close(bar):
    if bar is not None:
        bar.close()
