"""The torch device: choosing it, what it computes in, and moving rows on
and off it.

Training data live on the training device as one tensor and are indexed
batch by batch: a ``DataLoader`` would copy and collate every batch in
Python. Data too large for a GPU's free memory stay on the host instead,
and each batch is copied over from page-locked memory without blocking (see
:func:`data_device` and :func:`rows`). Inference goes through
:func:`map_batches`, one batch on the device at a time.
"""

import contextlib
import warnings

import numpy as np
import torch


class DeviceWarning(UserWarning):
    """A model was placed on another device than the one it asks for.

    Raised when a saved or pickled model whose ``device`` parameter names
    a device this machine lacks (a CUDA model opened on a laptop, say) is
    restored onto the CPU instead.
    """


def resolve_device(device):
    """Return the ``torch.device`` for a user's ``device`` parameter.

    ``"auto"`` picks CUDA, then Apple's MPS, then the CPU. Anything torch does
    not recognise, or a device this machine lacks, raises ``ValueError``.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', "
            "'cuda', 'cuda:N' or 'mps'."
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on "
                "this machine; use device='auto' or 'cpu'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    elif resolved.type == "mps" and not _mps_available():
        raise ValueError(
            f"device={device!r} was requested but MPS is not available on this "
            "machine; use device='auto' or 'cpu'."
        )
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'."
        )
    return resolved


def restore_device(requested, own):
    """The device a saved or pickled model is restored onto.

    ``requested`` (the caller's explicit choice) must exist here. Without
    one, the model's ``own`` device parameter is used where this machine has
    it, else the CPU, with a :class:`DeviceWarning`.
    """
    if requested is not None:
        return resolve_device(requested)
    try:
        return resolve_device(own)
    except ValueError as exc:
        warnings.warn(
            f"The model asks for device={own!r}, which this machine cannot use ({exc}); "
            "it was placed on the CPU. Pass device=... to choose explicitly.",
            DeviceWarning,
            stacklevel=4,
        )
        return torch.device("cpu")


def _mps_available():
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def seeded(seed, device):
    """Context in which torch's global generators are seeded with ``seed``.

    The caller's own random state is restored on exit, so fitting a model
    never changes the random numbers the user's code sees afterwards.
    """
    stack = contextlib.ExitStack()
    if device.type == "cpu":
        stack.enter_context(torch.random.fork_rng(devices=[]))
    else:
        index = device.index if device.index is not None else 0
        stack.enter_context(
            torch.random.fork_rng(devices=[index], device_type=device.type)
        )
    torch.manual_seed(seed)  # seeds the CPU and every accelerator generator
    return stack


# --------------------------------------------------------------- numerics
def mixed_precision(device, on_cpu=False):
    """Autocast context for a training forward pass on ``device``.

    bfloat16 on CUDA devices that support it: it keeps float32's exponent
    range, so no loss scaling is needed, and autocast leaves the
    log-likelihood, softmax and reductions in float32. On the CPU only with
    ``on_cpu`` and where the CPU multiplies bfloat16 natively (AVX-512 BF16
    or AMX): that halves the time of a network of large dense products, the
    autoencoder, and speeds up the categorical VAE's step only when its
    products are large too (see :func:`cpu_bfloat16_pays`). Other CPUs and
    MPS train in float32. Inference and scoring always run in float32.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        # No cache of cast weights: PyTorch requires it off while a CUDA
        # graph is captured, and a step casts each weight at most twice.
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    if device.type == "cpu" and on_cpu and _cpu_multiplies_bfloat16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Rows x features of a training batch below which the categorical VAE's
# step runs no faster under the CPU's bfloat16: its products are then too
# small for the faster multiply to pay for the casts around them.
_CPU_BFLOAT16_MIN_BATCH_ELEMENTS = 100_000


def cpu_bfloat16_pays(device, batch_size, n_features):
    """Whether the categorical VAE trains under bfloat16 on this CPU.

    Only on a CPU that multiplies bfloat16 natively, and only for batches
    of at least ``_CPU_BFLOAT16_MIN_BATCH_ELEMENTS`` values: small products
    (few features, small batches) run slower under it.
    """
    return (
        device.type == "cpu"
        and batch_size * n_features >= _CPU_BFLOAT16_MIN_BATCH_ELEMENTS
        and _cpu_multiplies_bfloat16()
    )


def pair_multiple(cpu_bfloat16, batch_size):
    """What training pads the sparse decoding's (row, cluster) pairs to a
    multiple of (see :meth:`CategoricalVAE.elbo`).

    The CPU's bfloat16 matrix kernels are compiled for each shape they
    meet, and the number of pairs changes with every batch: unpadded, a fit
    spends more time compiling kernels than float32 spends computing. Half
    a batch keeps it to a few shapes for at most half a batch of extra
    rows. Float32 kernels need no padding, so otherwise this is 1.
    """
    return max(1, batch_size // 2) if cpu_bfloat16 else 1


def _cpu_multiplies_bfloat16():
    """Whether this CPU has bfloat16 dot-product instructions."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    # Private torch probes: a torch without them is treated as having neither.
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


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


# ------------------------------------------------------------------- rows
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


def to_tensor(X, device):
    """float32 tensor of a numpy array on ``device`` (no copy when possible)."""
    return torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=device)


def batches(n, batch_size, device, shuffle=True):
    """Row indices of ``n`` rows, ``batch_size`` at a time, on ``device``."""
    order = torch.randperm(n, device=device) if shuffle else torch.arange(n, device=device)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def rows(X, idx, device):
    """Rows ``idx`` of the tensor ``X`` on ``device``.

    An index when ``X`` lives there already. From the host, the batch is
    gathered into page-locked memory and copied without blocking, so the
    copy overlaps the previous step's kernels; torch's pinned allocator
    keeps the buffer alive until the copy has finished.
    """
    batch = X.index_select(0, idx)  # a fifth of X[idx]'s time on the CPU
    return _moved(batch, device)


def _moved(batch, device):
    if batch.device == device:
        return batch
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def map_batches(fn, X, device, batch_size, pad=False):
    """``fn`` (tensor -> tensor, or a tuple of them) over the rows of ``X``.

    ``X`` is a numpy array or a tensor on any device; ``batch_size`` rows at a
    time go to ``device``, so memory beyond the outputs stays bounded. With
    ``pad``, a last, shorter batch is padded with zero rows, so that ``fn``
    sees every row in a batch of the same shape. The results come back as
    numpy arrays, concatenated along the first axis.
    """
    n = X.shape[0]
    outputs, result = None, None
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = X[start : start + batch_size]
            batch = _moved(batch, device) if torch.is_tensor(batch) else to_tensor(batch, device)
            if pad and batch.shape[0] < batch_size:
                padding = batch.new_zeros((batch_size - batch.shape[0],) + batch.shape[1:])
                batch = torch.cat([batch, padding])
            result = fn(batch)
            parts = result if isinstance(result, tuple) else (result,)
            if outputs is None:
                outputs = [
                    np.empty((n,) + tuple(p.shape[1:]), dtype=_numpy_dtype(p)) for p in parts
                ]
            stop = min(start + batch_size, n)
            for out, p in zip(outputs, parts):
                # float(): an embedding trained under autocast comes out in bfloat16.
                p = p[: stop - start].float() if p.is_floating_point() else p[: stop - start]
                out[start:stop] = p.cpu().numpy()
    return outputs if isinstance(result, tuple) else outputs[0]


def _numpy_dtype(tensor):
    return np.int64 if tensor.dtype == torch.long else np.float32


def fixed_noise(shape, device, seed=0):
    """Standard normal draws that are the same on every call and device."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(device)
