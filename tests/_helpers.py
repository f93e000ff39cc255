"""Small data and settings shared by the tests."""

import numpy as np
from sklearn.datasets import load_digits, make_blobs
from sklearn.preprocessing import StandardScaler

# Quick settings: a test fit should take a second or two on one CPU thread.
QUICK = dict(hidden_layer_sizes=(64,), max_iter=20, pretrain_iter=5, random_state=0)


def digits(n=400):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16.0, y[:n]


def blobs(n_samples=300, centers=3, n_features=6, random_state=0):
    X, y = make_blobs(
        n_samples=n_samples,
        centers=centers,
        n_features=n_features,
        cluster_std=1.0,
        center_box=(-8, 8),
        random_state=random_state,
    )
    return StandardScaler().fit_transform(X), y


def unit_interval(n=60, n_features=8, seed=0):
    return np.random.RandomState(seed).uniform(size=(n, n_features))


def training_config(**overrides):
    """A ``TrainingConfig`` for driving ``_training`` functions directly."""
    from catvae_sklearn._training import TrainingConfig

    settings = dict(
        batch_size=32, learning_rate=1e-3, max_iter=1, tol=0.0, n_iter_no_change=1,
        info_weight=10.0, balance_weight=1.0, min_decode_proba=0.0, pretrain_iter=0,
        guide_iter=None, seed=0,
    )
    settings.update(overrides)
    return TrainingConfig(**settings)
