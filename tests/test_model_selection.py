"""GridSearchCV, pipelines and parallel workers."""

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from catvae_sklearn import InfoCatVAE
from catvae_sklearn.metrics import cluster_accuracy_scorer

from ._helpers import QUICK, blobs


def test_grid_search_with_default_score_over_k_and_delta():
    X, _ = blobs(240, centers=3)
    search = GridSearchCV(
        InfoCatVAE(**QUICK), {"n_clusters": [2, 3], "subspace_dim": [1, 2]}, cv=2
    ).fit(X)
    assert set(search.best_params_) == {"n_clusters", "subspace_dim"}
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores))
    # The default score is held-out ELBO, so the best score is the best mean.
    assert search.best_score_ == pytest.approx(scores.max())


def test_grid_search_in_a_pipeline_with_the_accuracy_scorer():
    X, y = blobs(240, centers=3)
    pipe = Pipeline([("scale", StandardScaler()), ("infocatvae", InfoCatVAE(**QUICK))])
    search = GridSearchCV(
        pipe, {"infocatvae__n_clusters": [2, 3]}, scoring=cluster_accuracy_scorer, cv=2
    ).fit(X, y)
    assert search.best_params_ == {"infocatvae__n_clusters": 3}
    assert search.best_score_ > 0.9


def test_parallel_search_in_process_workers():
    X, _ = blobs(200, centers=3)
    search = GridSearchCV(
        InfoCatVAE(**QUICK), {"n_clusters": [2, 3]}, cv=2, n_jobs=-1
    ).fit(X)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def _worker_threads():
    import torch

    return torch.get_num_threads()


def test_process_workers_do_not_oversubscribe_torch_threads():
    n_jobs = 2
    threads = joblib.Parallel(n_jobs=n_jobs)(joblib.delayed(_worker_threads)() for _ in range(2))
    assert max(threads) <= max(1, joblib.cpu_count() // n_jobs)
