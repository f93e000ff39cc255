"""Figures of a fitted :class:`~catvae_sklearn.InfoCatVAE`.

Needs matplotlib (``pip install "catvae-sklearn[plot]"``). Each function
returns the :class:`matplotlib.figure.Figure` it draws.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "plot_centroids",
    "plot_latent",
    "plot_loss_curve",
    "plot_samples",
    "plot_traversals",
]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "catvae_sklearn.plotting needs matplotlib: pip install 'catvae-sklearn[plot]'"
        ) from None
    return plt


def _check_image_shape(estimator, image_shape):
    if image_shape is None:
        return None
    image_shape = tuple(int(s) for s in image_shape)
    if int(np.prod(image_shape)) != estimator.n_features_in_:
        raise ValueError(
            f"image_shape={image_shape} holds {int(np.prod(image_shape))} values but the "
            f"model has {estimator.n_features_in_} features."
        )
    return image_shape


def _draw_grid(rows, image_shape, row_labels, title):
    """rows: array (n_rows, n_cols, n_features); images or feature profiles."""
    plt = _pyplot()
    n_rows, n_cols = rows.shape[:2]
    if image_shape is not None:
        fig, axes = plt.subplots(
            n_rows, n_cols, figsize=(0.9 * n_cols + 0.6, 0.9 * n_rows + 0.4), squeeze=False
        )
        for r in range(n_rows):
            for c in range(n_cols):
                ax = axes[r, c]
                ax.imshow(rows[r, c].reshape(image_shape), cmap="gray_r")
                ax.set_xticks([])
                ax.set_yticks([])
            axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center")
    else:
        fig, axes = plt.subplots(n_rows, 1, figsize=(6, 0.9 * n_rows + 0.4), squeeze=False)
        for r in range(n_rows):
            ax = axes[r, 0]
            ax.plot(rows[r].T, color="C0", alpha=0.5)
            ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center")
            ax.set_xticks([])
    fig.suptitle(title)
    return fig


def plot_samples(estimator, n_per_cluster=10, image_shape=None):
    """Conditional generation: one row of samples per cluster.

    Parameters
    ----------
    estimator : fitted InfoCatVAE
    n_per_cluster : int, default=10
    image_shape : tuple of int, default=None
        E.g. ``(28, 28)`` to draw images; feature profiles otherwise.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    check_is_fitted(estimator)
    image_shape = _check_image_shape(estimator, image_shape)
    K = estimator.n_clusters
    rows = np.stack([estimator.sample(n_per_cluster, cluster=c)[0] for c in range(K)])
    return _draw_grid(rows, image_shape, [f"c={c}" for c in range(K)], "Samples per cluster")


def plot_traversals(estimator, n_steps=8, max_scale=None, image_shape=None, mode="radial"):
    """Move through the latent space and decode.

    ``mode="radial"`` walks from the origin along each cluster's prior mean
    direction up to ``max_scale`` (the paper's lambda figure);
    ``mode="interpolate"`` walks from each cluster's prior mean to the next
    cluster's.

    Parameters
    ----------
    estimator : fitted InfoCatVAE
    n_steps : int, default=8
    max_scale : float, default=None
        End of the radial walk, in units of the prior mean; defaults to 2.
    image_shape : tuple of int, default=None
    mode : {"radial", "interpolate"}, default="radial"

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    check_is_fitted(estimator)
    _check_option("mode", mode, ("radial", "interpolate"))
    image_shape = _check_image_shape(estimator, image_shape)
    means = estimator.module_.prior_means.cpu().numpy()
    K = estimator.n_clusters
    t = np.linspace(0.0, 2.0 if max_scale is None else max_scale, n_steps)
    if mode == "radial":
        Z = means[:, None, :] * t[None, :, None]
        labels = [f"c={c}" for c in range(K)]
    else:
        t = np.linspace(0.0, 1.0, n_steps)
        nxt = np.roll(means, -1, axis=0)
        Z = means[:, None, :] * (1 - t[None, :, None]) + nxt[:, None, :] * t[None, :, None]
        labels = [f"{c}->{(c + 1) % K}" for c in range(K)]
    decoded = estimator.inverse_transform(Z.reshape(-1, Z.shape[-1]).astype(np.float32))
    rows = decoded.reshape(K, n_steps, -1)
    title = "Radial traversal" if mode == "radial" else "Interpolation between clusters"
    return _draw_grid(rows, image_shape, labels, title)


def plot_centroids(estimator, image_shape=None):
    """Decoded cluster centres, ``estimator.cluster_centers_``.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    check_is_fitted(estimator)
    image_shape = _check_image_shape(estimator, image_shape)
    rows = estimator.cluster_centers_[None, :, :]
    if image_shape is None:
        rows = estimator.cluster_centers_[:, None, :]
        labels = [f"c={c}" for c in range(estimator.n_clusters)]
    else:
        labels = [""]
    return _draw_grid(rows, image_shape, labels, "Decoded cluster centres")


def plot_latent(estimator, X, y=None, method="pca", random_state=0):
    """The latent space in 2-D, points coloured by cluster (or by ``y``).

    Parameters
    ----------
    estimator : fitted InfoCatVAE
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,), default=None
        Colours; the predicted clusters when omitted.
    method : {"pca", "tsne"}, default="pca"
        Projection of ``transform(X)`` to two dimensions.
    random_state : int, default=0

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    check_is_fitted(estimator)
    _check_option("method", method, ("pca", "tsne"))
    Z = np.asarray(estimator.transform(X))
    colours = estimator.predict(X) if y is None else np.asarray(y)
    if method == "pca":
        Z2 = PCA(2, random_state=random_state).fit_transform(Z)
    else:
        Z2 = TSNE(2, random_state=random_state, init="pca").fit_transform(Z)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    scatter = ax.scatter(Z2[:, 0], Z2[:, 1], c=colours, cmap="tab10", s=6)
    ax.legend(*scatter.legend_elements(), title="cluster" if y is None else "label",
              loc="best", fontsize="small")
    ax.set_title(f"Latent space ({method.upper()} of E[z|x])")
    return fig


def plot_loss_curve(estimator):
    """Training loss per epoch (and held-out ELBO with early stopping).

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    check_is_fitted(estimator)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    epochs = np.arange(1, len(estimator.loss_curve_) + 1)
    ax.plot(epochs, estimator.loss_curve_, label="training -ELBO")
    if estimator.validation_scores_ is not None:
        ax.plot(epochs, -np.asarray(estimator.validation_scores_), label="validation -ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per sample")
    ax.legend()
    return fig


def _check_option(name, value, options):
    if value not in options:
        choices = " or ".join(repr(option) for option in options)
        raise ValueError(f"{name} must be {choices}, got {value!r}.")
