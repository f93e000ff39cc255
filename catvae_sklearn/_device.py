"""Choosing the torch device and moving data on and off it."""

import contextlib

import torch


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
