"""The same grid search on a Dask distributed cluster, through joblib."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from catvae_sklearn import InfoCatVAE

from ._helpers import QUICK, blobs

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def dask_client():
    # Worker processes, as on a real cluster: each imports torch itself.
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_grid_search_runs_on_dask_workers_and_matches_a_local_search(dask_client):
    import joblib

    X, _ = blobs(200, centers=3)
    grid = {"n_clusters": [2, 3], "subspace_dim": [1, 2]}
    local = GridSearchCV(InfoCatVAE(**QUICK), grid, cv=2).fit(X)

    with distributed.get_task_stream(dask_client) as tasks:
        with joblib.parallel_config(backend="dask"):
            remote = GridSearchCV(InfoCatVAE(**QUICK), grid, cv=2, n_jobs=-1).fit(X)

    # 4 candidates x 2 folds ran as tasks on the cluster's workers.
    workers = {task["worker"] for task in tasks.data}
    assert workers and workers <= set(dask_client.scheduler_info()["workers"])
    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(
        remote.cv_results_["mean_test_score"],
        local.cv_results_["mean_test_score"],
        rtol=1e-4,
    )
    # The refit model is usable on the client.
    assert remote.predict(X).shape == (200,)
