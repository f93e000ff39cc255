"""Bad input gets a ValueError or TypeError that names the problem."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score
from sklearn.utils._param_validation import InvalidParameterError

from catvae_sklearn import InfoCatVAE

from ._helpers import QUICK, blobs, digits, unit_interval


@pytest.fixture(scope="module")
def fitted():
    X, _ = digits(100)
    return InfoCatVAE(n_clusters=3, **QUICK).fit(X)


@pytest.mark.parametrize(
    "X, error, match",
    [
        (np.array([[0.1, np.nan], [0.2, 0.3], [0.4, 0.5]]), ValueError, "NaN"),
        (np.array([[0.1, np.inf], [0.2, 0.3], [0.4, 0.5]]), ValueError, "infinity"),
        (np.empty((0, 3)), ValueError, "0 sample"),
        (np.ones((1, 3)) * 0.5, ValueError, "1 sample"),
        (np.ones(5) * 0.5, ValueError, "Expected 2D array"),
        (np.ones((4, 3, 2)) * 0.5, ValueError, "dim 3"),
        (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), ValueError, "string"),
        (np.array([[object(), 1.0]] * 3), TypeError, "object"),
        (np.ones((3, 2)) * (0.5 + 1j), ValueError, "Complex"),
        (sp.random(10, 4, density=0.5, format="csr", random_state=0), TypeError, "Sparse"),
    ],
    ids=["nan", "inf", "empty", "one-sample", "1d", "3d", "strings", "objects",
         "complex", "sparse"],
)
def test_fit_rejects_bad_input(X, error, match):
    with pytest.raises(error, match=match):
        InfoCatVAE(n_clusters=2, **QUICK).fit(X)


def test_fewer_samples_than_clusters():
    with pytest.raises(ValueError, match="n_samples=4 should be >= n_clusters=5"):
        InfoCatVAE(n_clusters=5, **QUICK).fit(unit_interval(4))


def test_wrong_number_of_features_at_predict(fitted):
    for method in ("predict", "predict_proba", "transform", "score_samples"):
        with pytest.raises(ValueError, match="X has 5 features, but InfoCatVAE is expecting 64"):
            getattr(fitted, method)(np.zeros((2, 5)))


def test_nan_at_predict_is_refused(fitted):
    X = np.zeros((2, 64))
    X[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(X)


@pytest.mark.parametrize("method", ["fit", "predict", "score_samples"])
def test_bernoulli_rejects_values_outside_unit_interval(fitted, method):
    X = unit_interval(20, 64) * 255.0
    with pytest.raises(ValueError, match=r"Bernoulli likelihood needs every value of X in \[0, 1\]"):
        if method == "fit":
            InfoCatVAE(n_clusters=2, likelihood="bernoulli", **QUICK).fit(X)
        else:
            getattr(fitted, method)(X)


def test_refit_on_other_data_forgets_the_previous_fits_likelihood():
    # "auto" resolved to Bernoulli on [0, 1] data must not make the next fit
    # refuse real-valued data: a refit is a fresh fit.
    X_real, _ = blobs()
    refitted = InfoCatVAE(n_clusters=3, **QUICK).fit(unit_interval(50, 6)).fit(X_real)
    fresh = InfoCatVAE(n_clusters=3, **QUICK).fit(X_real)
    assert refitted.likelihood_ == fresh.likelihood_ == "gaussian"
    np.testing.assert_array_equal(refitted.labels_, fresh.labels_)


@pytest.mark.parametrize("device", ["gpu", "tpu:0", "cuda:banana"])
def test_unknown_device(device):
    with pytest.raises(ValueError, match="device="):
        InfoCatVAE(n_clusters=2, device=device, **QUICK).fit(unit_interval())


def test_missing_cuda_is_named():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        InfoCatVAE(n_clusters=2, device="cuda", **QUICK).fit(unit_interval())


@pytest.mark.parametrize("cluster", [3, -1, [0, 7], 1.5, "a", []])
def test_sample_with_a_cluster_that_does_not_exist(fitted, cluster):
    with pytest.raises(ValueError, match="cluster"):
        fitted.sample(2, cluster=cluster)


@pytest.mark.parametrize("n_samples", [0, -3, 2.5])
def test_sample_with_bad_n_samples(fitted, n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(n_samples)


@pytest.mark.parametrize(
    "params",
    [
        {"n_clusters": 0},
        {"subspace_dim": 0},
        {"prior_scale": -1.0},
        {"info_weight": -0.5},
        {"likelihood": "poisson"},
        {"batch_size": 0},
        {"learning_rate_init": 0.0},
        {"max_iter": 0},
        {"validation_fraction": 1.0},
        {"init_params": "pca"},
        {"device": 0},
    ],
)
def test_invalid_parameters_raise_invalid_parameter_error(params):
    with pytest.raises(InvalidParameterError):
        InfoCatVAE(**params).fit(unit_interval())


@pytest.mark.parametrize("sizes", [(0,), (10, -2), ("a",)])
def test_bad_hidden_layer_sizes(sizes):
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        InfoCatVAE(n_clusters=2, **{**QUICK, "hidden_layer_sizes": sizes}).fit(unit_interval())


def test_unfitted_model_raises_not_fitted():
    from sklearn.exceptions import NotFittedError

    for method in ("predict", "predict_proba", "transform", "score_samples"):
        with pytest.raises(NotFittedError):
            getattr(InfoCatVAE(), method)(unit_interval())
    with pytest.raises(NotFittedError):
        InfoCatVAE().sample(1)


def test_huge_and_constant_values_still_fit():
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=(80, 3)) * 1e6, np.full(80, 7.0)]
    model = InfoCatVAE(n_clusters=2, **QUICK).fit(X)
    assert np.all(np.isfinite(model.predict_proba(X)))
    assert np.all(np.isfinite(model.score_samples(X)))


@pytest.mark.parametrize("method", ["fit", "predict", "score_samples"])
def test_float64_beyond_float32_range_is_refused(fitted, method):
    X, _ = digits(20)
    X = X * 1e300  # finite in float64, inf once cast to the network's float32
    estimator = InfoCatVAE(n_clusters=2, likelihood="gaussian", **QUICK) if method == "fit" else fitted
    with pytest.raises(ValueError, match="beyond the float32 range"):
        getattr(estimator, method)(X)


def test_latent_beyond_float32_range_is_refused(fitted):
    Z = np.full((2, fitted.module_.latent_dim), 1e300)
    with pytest.raises(ValueError, match="Z has values .* float32 range"):
        fitted.inverse_transform(Z)


def test_values_near_float32_limit_fit_like_the_same_data_unscaled():
    X, _ = blobs(n_samples=120)
    X = X + 10.0
    # The column sums of X * 1e36 (about 1.2e39) overflow float32, so the
    # data scaling must not be computed from them directly.
    base = InfoCatVAE(n_clusters=3, **QUICK).fit(X)
    huge = InfoCatVAE(n_clusters=3, **QUICK).fit(X * 1e36)
    assert np.isfinite(huge.score(X * 1e36))
    assert np.allclose(huge.module_.data_scale.cpu().numpy() / 1e36, X.std(0, ddof=1), rtol=1e-3)
    assert adjusted_rand_score(base.predict(X), huge.predict(X * 1e36)) > 0.9


def test_scores_of_far_outliers_are_minus_infinity_not_nan():
    X, _ = blobs(n_samples=120)
    model = InfoCatVAE(n_clusters=3, **QUICK).fit(X)
    # Standardised, these rows' squared residuals overflow float32.
    scores = model.score_samples(np.vstack([X[:3], X[:3] * 1e36]))
    assert np.all(np.isfinite(scores[:3]))
    assert not np.any(np.isnan(scores))
    assert np.all(scores[3:] == -np.inf)
