"""Saving and loading fitted models without pickle.

A model file is a zip archive with two members, both stored uncompressed:

``model.json``
    Format name and version, library version, the estimator's parameters,
    its fitted metadata, and the SHA-256 of ``weights.pt``.
``weights.pt``
    The network's state dict and ``labels_``, written by ``torch.save`` and
    read back with ``torch.load(weights_only=True)``, which refuses anything
    but tensors and plain containers, so loading never runs code.

A file may come from anyone, so :func:`load` checks everything before it
builds anything: the members and their sizes, the metadata's schema, the
parameters (through the estimator's own constraints), and the architecture
against the shapes of the weights, which it compares on torch's ``meta``
device, where building a network allocates no memory. Every failure is a
``ValueError`` naming the file and the problem.
"""

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from numbers import Integral, Real

import numpy as np
import torch

FORMAT_NAME = "catvae_sklearn.InfoCatVAE"
FORMAT_VERSION = 1
_META = "model.json"
_WEIGHTS = "weights.pt"
# model.json of a model with 10,000 training epochs and long feature names
# stays far below this; a larger one is not a model file.
_MAX_META_BYTES = 2**20

# What model.json holds: key -> accepted types. bool is an int to Python,
# but never a valid count here.
_META_SCHEMA = {"format": str, "format_version": Integral, "params": dict, "fitted": dict,
                "weights_sha256": str}
_FITTED_SCHEMA = {"module_config": dict, "likelihood_": str, "n_iter_": Integral,
                  "loss_curve_": list, "validation_scores_": (list, type(None)),
                  "n_features_in_": Integral}
_MODULE_CONFIG_SCHEMA = {"n_features": Integral, "n_clusters": Integral, "subspace_dim": Integral,
                         "hidden_layer_sizes": list, "prior_scale": Real, "likelihood": str}


def cpu_state_dict(module):
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _json_params(estimator):
    params = estimator.get_params(deep=False)
    random_state = params["random_state"]
    if random_state is not None and not isinstance(random_state, (int, np.integer)):
        # A RandomState instance has no faithful JSON form; it only seeds fit.
        params["random_state"] = None
    memory = params["memory"]
    if memory is not None and not isinstance(memory, str):
        # A joblib.Memory has no JSON form either; it only caches a fit's
        # start. Its folder stands for it, as ``memory=<folder>`` would
        # (no folder: no cache).
        location = getattr(memory, "location", None)
        params["memory"] = None if location is None else str(location)
    hidden = params["hidden_layer_sizes"]
    params["hidden_layer_sizes"] = (
        [int(h) for h in hidden] if np.ndim(hidden) else int(hidden)
    )
    return _plain_scalars(params)


def _plain_scalars(mapping):
    """``mapping`` with numpy scalars as the Python numbers JSON can hold
    (a search over ``np.arange(...)`` passes numpy integers)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in mapping.items()}


def save(estimator, path):
    """Write ``estimator`` to ``path``, replacing any file there atomically:
    the archive is written beside it and renamed over it, so an interrupted
    save never leaves half a file where a good one was."""
    from . import __version__

    buffer = io.BytesIO()
    torch.save(
        {
            "state_dict": cpu_state_dict(estimator.module_),
            "labels": torch.as_tensor(estimator.labels_),
        },
        buffer,
    )
    weights = buffer.getvalue()
    config = _plain_scalars(estimator._module_config)
    config["hidden_layer_sizes"] = list(config["hidden_layer_sizes"])
    fitted = {
        "module_config": config,
        "likelihood_": estimator.likelihood_,
        "n_iter_": estimator.n_iter_,
        "loss_curve_": list(estimator.loss_curve_),
        "validation_scores_": estimator.validation_scores_,
        "n_features_in_": estimator.n_features_in_,
    }
    if hasattr(estimator, "feature_names_in_"):
        fitted["feature_names_in_"] = [str(f) for f in estimator.feature_names_in_]
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "params": _json_params(estimator),
        "fitted": fitted,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        # Otherwise the error would name the temporary file written beside it.
        raise FileNotFoundError(f"Cannot save to {path!r}: the folder {folder!r} does not exist.")
    handle, partial = tempfile.mkstemp(
        prefix=os.path.basename(path) + ".", suffix=".partial", dir=folder
    )
    try:
        with os.fdopen(handle, "wb") as file:
            with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
                archive.writestr(_META, json.dumps(meta, indent=1))
                archive.writestr(_WEIGHTS, weights)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise


def _corrupt(path, reason):
    return ValueError(f"{os.fspath(path)!r} is not a valid InfoCatVAE model file: {reason}.")


def load(cls, path, device=None):
    meta, weights = _read_members(path)
    _check_keys(path, meta, _META_SCHEMA, "the metadata")
    if meta["format"] != FORMAT_NAME:
        raise _corrupt(path, "its metadata does not name the InfoCatVAE format")
    if meta["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} uses model format version {meta['format_version']}, "
            f"newer than this library reads ({FORMAT_VERSION}); upgrade catvae_sklearn "
            f"(the file was written by version {meta.get('library_version')})."
        )
    fitted = meta["fitted"]
    _check_keys(path, fitted, _FITTED_SCHEMA, "'fitted'")
    _check_keys(path, fitted["module_config"], _MODULE_CONFIG_SCHEMA, "'fitted.module_config'")
    state, labels = _read_weights(path, weights, meta["weights_sha256"])

    if fitted["n_iter_"] < 0:
        raise _corrupt(path, "'n_iter_' is negative")
    estimator = _estimator_from_params(cls, path, meta["params"])
    estimator.likelihood_ = fitted["likelihood_"]
    estimator._module_config = _checked_module_config(path, estimator, fitted, state)
    config = estimator._module_config
    estimator.n_iter_ = int(fitted["n_iter_"])
    estimator.loss_curve_ = _numbers(path, fitted["loss_curve_"], "loss_curve_")
    scores = fitted["validation_scores_"]
    estimator.validation_scores_ = (
        None if scores is None else _numbers(path, scores, "validation_scores_")
    )
    estimator.n_features_in_ = config["n_features"]
    if "feature_names_in_" in fitted:
        names = fitted["feature_names_in_"]
        if not (isinstance(names, list) and len(names) == config["n_features"]
                and all(isinstance(name, str) for name in names)):
            raise _corrupt(path, f"'feature_names_in_' is not a list of {config['n_features']} names")
        estimator.feature_names_in_ = np.asarray(names, dtype=object)
    if labels.ndim != 1 or labels.dtype != torch.int64 or (
        labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < config["n_clusters"])
    ):
        raise _corrupt(path, f"its labels are not cluster indices in 0..{config['n_clusters'] - 1}")
    estimator._optimizer = None
    estimator._stream = None
    estimator._restore_module(state, device)
    estimator.labels_ = labels.numpy()
    estimator.cluster_centers_ = estimator._decode_latent(
        estimator.module_.prior_means.cpu().numpy()
    )
    return estimator


# What zipfile raises for a damaged archive: besides BadZipFile, a flipped
# flag bit reads as encryption (RuntimeError) or an unknown method
# (NotImplementedError), and damaged headers as OSError or EOFError.
_UNREADABLE = (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError,
               NotImplementedError)


def _read_members(path):
    """``(metadata, weight bytes)`` of the archive at ``path``, reading no
    more than the file holds: members must be stored, not compressed."""
    try:
        archive = zipfile.ZipFile(os.fspath(path))
    except FileNotFoundError:
        raise
    except _UNREADABLE:
        raise _corrupt(
            path,
            "it is not a zip archive written by InfoCatVAE.save (it may be "
            "truncated, or a pickle, which is never loaded)",
        ) from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        for name in (_META, _WEIGHTS):
            if name not in members:
                raise _corrupt(path, f"member {name!r} is missing")
        extra = sorted(set(members) - {_META, _WEIGHTS})
        if extra or len(archive.infolist()) != 2:
            raise _corrupt(path, f"it holds members other than {_META} and {_WEIGHTS}: {extra}")
        file_bytes = os.path.getsize(os.fspath(path))
        for info in members.values():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise _corrupt(path, f"member {info.filename!r} is compressed (save stores members)")
            if info.file_size > file_bytes:
                raise _corrupt(path, f"member {info.filename!r} claims more bytes than the file has")
        if members[_META].file_size > _MAX_META_BYTES:
            raise _corrupt(path, f"its metadata is larger than {_MAX_META_BYTES} bytes")
        try:
            meta = json.loads(archive.read(_META))
            weights = archive.read(_WEIGHTS)
        except _UNREADABLE + (RecursionError,) as exc:
            raise _corrupt(path, f"it could not be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise _corrupt(path, "its metadata is not a JSON object")
    return meta, weights


def _check_keys(path, mapping, schema, where):
    for key, types in schema.items():
        if key not in mapping:
            raise _corrupt(path, f"{where} has no {key!r}")
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise _corrupt(path, f"{where}: {key!r} has the wrong type ({type(value).__name__})")


def _numbers(path, values, name):
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in values):
        raise _corrupt(path, f"{name!r} is not a list of numbers")
    return [float(v) for v in values]


def _read_weights(path, weights, sha256):
    if hashlib.sha256(weights).hexdigest() != sha256:
        raise _corrupt(path, "the weights do not match their checksum (the file is corrupted)")
    try:
        payload = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad archive
        raise _corrupt(path, f"the weights could not be read ({exc})") from None
    if not (isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict)
            and torch.is_tensor(payload.get("labels"))
            and all(torch.is_tensor(v) for v in payload["state_dict"].values())):
        raise _corrupt(path, "the weights are not a state dict and labels")
    return payload["state_dict"], payload["labels"]


def _estimator_from_params(cls, path, params):
    params = dict(params)
    unknown = sorted(set(params) - set(cls._parameter_constraints))
    if unknown:
        raise _corrupt(path, f"it sets parameters that {cls.__name__} does not have: {unknown}")
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    estimator = cls(**params)
    try:
        estimator._validate_params()
        estimator._checked_hidden_layer_sizes()
    except (TypeError, ValueError) as exc:
        raise _corrupt(path, f"its parameters are invalid ({exc})") from None
    return estimator


def _checked_module_config(path, estimator, fitted, state):
    """The network's configuration, checked against the parameters, the
    fitted metadata and the shapes of the weights in ``state``."""
    config = dict(fitted["module_config"])
    hidden = config["hidden_layer_sizes"]
    if not all(isinstance(h, Integral) and not isinstance(h, bool) for h in hidden):
        raise _corrupt(path, "'hidden_layer_sizes' in 'module_config' is not a list of integers")
    config["hidden_layer_sizes"] = tuple(int(h) for h in hidden)
    if not math.isfinite(config["prior_scale"]):
        raise _corrupt(path, "'prior_scale' in 'module_config' is not finite")
    expected = estimator._current_module_config(
        fitted["n_features_in_"], estimator._checked_hidden_layer_sizes()
    )
    differ = sorted(k for k in set(expected) | set(config) if config.get(k) != expected.get(k))
    if differ:
        raise _corrupt(path, f"its network configuration disagrees with its parameters in {differ}")
    # Every size is a dimension of some weight, so none exceeds their total
    # size: that bounds the network before it is built, even on `meta`.
    total = sum(v.numel() for v in state.values())
    sizes = [config["n_features"], config["n_clusters"], config["subspace_dim"], *hidden]
    if any(size < 1 or size > total for size in sizes):
        raise _corrupt(path, "its network sizes do not fit the size of its weights")
    from ._model import CategoricalVAE

    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in CategoricalVAE(**config).state_dict().items()}
    except ValueError as exc:
        raise _corrupt(path, f"its network configuration is invalid ({exc})") from None
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != shapes:
        wrong = sorted(k for k in set(shapes) | set(found) if shapes.get(k) != found.get(k))
        raise _corrupt(path, f"its weights do not fit the network it describes (at {wrong[:5]})")
    if any(v.dtype != torch.float32 or not torch.isfinite(v).all() for v in state.values()):
        raise _corrupt(path, "its weights are not finite float32 values")
    return config
