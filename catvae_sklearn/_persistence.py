"""Saving and loading fitted models without pickle.

A model file is a zip archive with two members:

``model.json``
    Format name and version, library version, the estimator's parameters,
    its fitted metadata, and the SHA-256 of ``weights.pt``.
``weights.pt``
    The network's state dict and ``labels_``, written by ``torch.save`` and
    read back with ``torch.load(weights_only=True)``, which refuses anything
    but tensors and plain containers, so loading never runs code.
"""

import hashlib
import io
import json
import os
import zipfile

import numpy as np
import torch


FORMAT_NAME = "catvae_sklearn.InfoCatVAE"
FORMAT_VERSION = 1
_META = "model.json"
_WEIGHTS = "weights.pt"


def cpu_state_dict(module):
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _json_params(estimator):
    params = estimator.get_params(deep=False)
    random_state = params["random_state"]
    if random_state is not None and not isinstance(random_state, (int, np.integer)):
        # A RandomState instance has no faithful JSON form; it only seeds fit.
        params["random_state"] = None
    hidden = params["hidden_layer_sizes"]
    params["hidden_layer_sizes"] = (
        [int(h) for h in hidden] if np.ndim(hidden) else int(hidden)
    )
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def save(estimator, path):
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
    fitted = {
        "module_config": estimator._module_config,
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
    with zipfile.ZipFile(os.fspath(path), "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(_META, json.dumps(meta, indent=1))
        archive.writestr(_WEIGHTS, weights)


def _corrupt(path, reason):
    return ValueError(f"{os.fspath(path)!r} is not a valid InfoCatVAE model file: {reason}.")


def load(cls, path, device=None):
    try:
        archive = zipfile.ZipFile(os.fspath(path))
    except zipfile.BadZipFile:
        raise _corrupt(
            path,
            "it is not a zip archive written by InfoCatVAE.save (it may be "
            "truncated, or a pickle, which is never loaded)",
        ) from None
    with archive:
        try:
            meta = json.loads(archive.read(_META))
            weights = archive.read(_WEIGHTS)
        except KeyError as exc:
            raise _corrupt(path, f"member {exc.args[0]} is missing") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise _corrupt(path, f"it could not be read ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise _corrupt(path, "its metadata does not name the InfoCatVAE format")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)!r} uses model format version {meta['format_version']}, "
            f"newer than this library reads ({FORMAT_VERSION}); upgrade catvae_sklearn "
            f"(the file was written by version {meta.get('library_version')})."
        )
    if hashlib.sha256(weights).hexdigest() != meta.get("weights_sha256"):
        raise _corrupt(path, "the weights do not match their checksum (the file is corrupted)")
    try:
        payload = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad archive
        raise _corrupt(path, f"the weights could not be read ({exc})") from None

    params = dict(meta["params"])
    if isinstance(params.get("hidden_layer_sizes"), list):
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    estimator = cls(**params)
    fitted = meta["fitted"]
    config = dict(fitted["module_config"])
    config["hidden_layer_sizes"] = tuple(config["hidden_layer_sizes"])
    estimator._module_config = config
    estimator.likelihood_ = fitted["likelihood_"]
    estimator.n_iter_ = fitted["n_iter_"]
    estimator.loss_curve_ = fitted["loss_curve_"]
    estimator.validation_scores_ = fitted["validation_scores_"]
    estimator.n_features_in_ = fitted["n_features_in_"]
    if "feature_names_in_" in fitted:
        estimator.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    estimator._optimizer = None
    estimator._stream = None
    estimator._restore_module(payload["state_dict"], device)
    estimator.labels_ = payload["labels"].numpy()
    estimator.cluster_centers_ = estimator._decode_latent(
        estimator.module_.prior_means.cpu().numpy()
    )
    return estimator
