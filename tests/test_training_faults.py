"""Training faults: non-finite losses, interruption, out-of-memory."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from catvae_sklearn import InfoCatVAE
from catvae_sklearn import _training

from ._helpers import QUICK, digits

# digits(200) with batch_size=50 gives 4 steps per epoch. The faults are
# injected by wrapping _training.training_step, which the steps that CUDA
# replays from a graph never call: these fits run on the CPU everywhere.
SETTINGS = {**QUICK, "batch_size": 50, "max_iter": 10, "init_params": "random", "device": "cpu"}


def _fail_at_step(monkeypatch, step, make_failure):
    """Make the ``step``-th training step and later ones fail: a step runs,
    then ``make_failure(module, batch_loss)`` gives its result or raises."""
    original = _training.training_step
    calls = {"n": 0}

    def training_step(module, *args, **kwargs):
        total = original(module, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= step:
            return make_failure(module, total)
        return total

    monkeypatch.setattr(_training, "training_step", training_step)
    return calls


def _nan_step(module, total):
    # A non-finite loss has a non-finite gradient, which the optimizer
    # writes into the weights.
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(float("nan"))
    return total * float("nan")


def test_non_finite_loss_rolls_back_and_warns(monkeypatch):
    X, _ = digits(200)
    _fail_at_step(monkeypatch, step=4 * 3 + 2, make_failure=_nan_step)  # inside epoch 4
    with pytest.warns(ConvergenceWarning, match="non-finite at epoch 4"):
        model = InfoCatVAE(n_clusters=3, **SETTINGS).fit(X)
    monkeypatch.undo()
    assert model.n_iter_ == 3
    assert len(model.loss_curve_) == 3
    for p in model.module_.parameters():
        assert torch.all(torch.isfinite(p))
    assert np.all(np.isfinite(model.predict_proba(X)))
    assert np.all(np.isfinite(model.score_samples(X)))


def test_non_finite_first_epoch_raises_a_clear_error(monkeypatch):
    X, _ = digits(200)
    _fail_at_step(monkeypatch, step=1, make_failure=_nan_step)
    with pytest.raises(ValueError, match="non-finite in the first epoch.*learning_rate_init"):
        InfoCatVAE(n_clusters=3, **SETTINGS).fit(X)


def test_keyboard_interrupt_keeps_weights_and_leaves_model_fitted(monkeypatch):
    X, _ = digits(200)

    def interrupt(module, total):
        raise KeyboardInterrupt

    _fail_at_step(monkeypatch, step=4 * 5 + 1, make_failure=interrupt)
    with pytest.warns(ConvergenceWarning, match="interrupted after 5 epoch"):
        model = InfoCatVAE(n_clusters=3, **SETTINGS).fit(X)
    monkeypatch.undo()
    assert model.n_iter_ == 5
    assert model.labels_.shape == (200,)
    assert np.all(np.isfinite(model.predict_proba(X)))


def test_keyboard_interrupt_before_any_epoch_propagates(monkeypatch):
    X, _ = digits(200)

    def interrupt(module, total):
        raise KeyboardInterrupt

    _fail_at_step(monkeypatch, step=1, make_failure=interrupt)
    with pytest.raises(KeyboardInterrupt):
        InfoCatVAE(n_clusters=3, **SETTINGS).fit(X)


def test_out_of_memory_names_batch_size(monkeypatch):
    X, _ = digits(200)

    def oom(module, total):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    _fail_at_step(monkeypatch, step=2, make_failure=oom)
    with pytest.raises(MemoryError, match="batch_size=50"):
        InfoCatVAE(n_clusters=3, **SETTINGS).fit(X)


def test_repeated_fits_do_not_warn():
    X, _ = digits(200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):  # on CUDA where there is one: graph capture included
            InfoCatVAE(n_clusters=3, **{**SETTINGS, "device": "auto"}).fit(X).predict(X)
