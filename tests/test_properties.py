"""Property-based tests over shapes, dtypes and value ranges, and a soak test."""

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from catvae_sklearn import InfoCatVAE

TINY = dict(hidden_layer_sizes=(8,), max_iter=2, pretrain_iter=1, batch_size=8, random_state=0)


@st.composite
def datasets(draw):
    n = draw(st.integers(4, 40))
    d = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    scale = draw(st.sampled_from([1.0, 1e-3, 1e4]))
    X = draw(arrays(dtype, (n, d), elements=st.floats(-1, 1, width=32))) * dtype(scale)
    K = draw(st.integers(1, min(4, n)))
    delta = draw(st.integers(1, 3))
    return X, K, delta


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets())
# Found by CI: identical rows, fewer rows than features (PCA divided 0 by 0).
@example((np.zeros((4, 5)), 2, 1))
def test_invariants_of_every_method(data):
    X, K, delta = data
    model = InfoCatVAE(n_clusters=K, subspace_dim=delta, **TINY).fit(X)
    n = X.shape[0]
    labels = model.predict(X)
    assert labels.shape == (n,) and labels.min() >= 0 and labels.max() < K
    proba = model.predict_proba(X)
    assert proba.shape == (n, K)
    assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(proba.argmax(1), labels)
    Z = model.transform(X)
    assert Z.shape == (n, K * delta) and Z.dtype == X.dtype and np.all(np.isfinite(Z))
    scores = model.score_samples(X)
    assert scores.shape == (n,) and np.all(np.isfinite(scores))
    if model.likelihood_ == "bernoulli":
        assert np.all(scores <= 0)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 1000))
def test_bernoulli_on_unit_interval_data(seed):
    X = np.random.RandomState(seed).uniform(size=(20, 5))
    model = InfoCatVAE(n_clusters=2, **TINY).fit(X)
    assert model.likelihood_ == "bernoulli"
    assert np.all(model.score_samples(X) <= 0)


def _rss_mib():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


def test_repeated_fit_predict_cycles_do_not_grow_memory():
    X = np.random.RandomState(0).uniform(size=(200, 20))
    for _ in range(10):  # warm-up: allocator pools, lazy imports
        InfoCatVAE(n_clusters=3, **TINY).fit(X).predict(X)
    before = _rss_mib()
    for _ in range(50):
        InfoCatVAE(n_clusters=3, **TINY).fit(X).predict(X)
    assert _rss_mib() - before < 30
