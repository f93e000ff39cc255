"""Clustering metrics that need labels: for evaluation, never for fitting."""

from scipy.optimize import linear_sum_assignment
from sklearn.metrics import make_scorer
from sklearn.metrics.cluster import contingency_matrix
from sklearn.utils.validation import check_consistent_length, column_or_1d

__all__ = ["cluster_accuracy_score", "cluster_accuracy_scorer"]


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
