"""Clustering metrics: accuracy against known classes (for evaluation, never
for fitting) and a label-free score for choosing the number of clusters."""

from scipy.optimize import linear_sum_assignment
import numpy as np
from sklearn.metrics import make_scorer, silhouette_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.utils import _safe_indexing
from sklearn.utils.validation import _num_samples, check_consistent_length, column_or_1d

__all__ = ["cluster_accuracy_score", "cluster_accuracy_scorer", "latent_silhouette_scorer"]


def cluster_accuracy_score(y_true, y_pred):
    """Accuracy of cluster labels under the best one-to-one matching of
    clusters to classes.

    The matching maximises the number of agreeing samples
    (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`). With
    more clusters than classes, unmatched clusters count as errors.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Ground-truth classes.
    y_pred : array-like of shape (n_samples,)
        Cluster labels.

    Returns
    -------
    accuracy : float
        In [0, 1]; 1 when clusters and classes agree up to renaming.

    Examples
    --------
    >>> from catvae_sklearn.metrics import cluster_accuracy_score
    >>> cluster_accuracy_score([0, 0, 1, 1, 2], [2, 2, 0, 0, 1])
    1.0
    >>> cluster_accuracy_score([0, 0, 1, 1], [0, 0, 0, 1])
    0.75
    """
    y_true = column_or_1d(y_true)
    y_pred = column_or_1d(y_pred)
    check_consistent_length(y_true, y_pred)
    if y_true.shape[0] == 0:
        raise ValueError("cluster_accuracy_score needs at least one sample.")
    counts = contingency_matrix(y_true, y_pred)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / y_true.shape[0])


cluster_accuracy_scorer = make_scorer(cluster_accuracy_score)
"""Scorer for :func:`cluster_accuracy_score`, e.g. ``GridSearchCV(scoring=...)``.

It calls the estimator's ``predict`` and compares with the ``y`` given to
the search, so it needs labels: use it to evaluate, not to pick a model
where labels are unknown.
"""


def latent_silhouette_scorer(estimator, X, y=None, *, max_samples=5000):
    """Silhouette of the predicted clusters in the model's latent space.

    A label-free score for choosing ``n_clusters`` with ``GridSearchCV``
    (``scoring=latent_silhouette_scorer``): it measures how well the
    clusters of held-out data are separated in the latent codes that
    ``transform`` returns, from -1 to 1, higher is better. It tends to
    pick the true number of clusters more often than the held-out ELBO
    that ``score`` gives (see the benchmarks page).

    Parameters
    ----------
    estimator : fitted InfoCatVAE, or a Pipeline ending in one
    X : array-like of shape (n_samples, n_features)
    y : Ignored
    max_samples : int, default=5000
        Silhouettes cost O(n^2): larger ``X`` is scored on a fixed random
        subsample of this size.

    Returns
    -------
    score : float
        -1 when every sample falls into one cluster, or each into its own
        (no separation to measure).
    """
    n_samples = _num_samples(X)
    if n_samples > max_samples:
        keep = np.random.default_rng(0).choice(n_samples, max_samples, replace=False)
        X = _safe_indexing(X, keep)
    labels = estimator.predict(X)
    if not 2 <= np.unique(labels).size < labels.shape[0]:
        return -1.0
    return float(silhouette_score(estimator.transform(X), labels))
