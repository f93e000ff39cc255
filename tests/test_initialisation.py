"""Where training starts: the t-SNE and mixture starts and the guide."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

from catvae_sklearn import InfoCatVAE
from catvae_sklearn import _device, _starts, _training
from catvae_sklearn.metrics import latent_silhouette_scorer

from ._helpers import QUICK, blobs, digits


def test_auto_start_is_tsne_for_wide_data_and_a_mixture_for_narrow_data():
    assert _starts.resolve_init("auto", 64) == "tsne"
    assert _starts.resolve_init("auto", 13) == "gmm"
    assert _starts.resolve_init("kmeans", 64) == "kmeans"


def test_tsne_start_on_a_subsample_labels_every_row(monkeypatch):
    monkeypatch.setattr(_starts, "_TSNE_MAX_ROWS", 150)
    X, y = blobs(n_samples=400, centers=3, n_features=8)
    embedded = []

    def embed(rows):
        embedded.append(len(rows))
        return rows[:, :2]

    features = _starts.tsne_features(X.astype(np.float32), 0, embed)
    labels = _starts.tsne_labels(features, 3, 0)
    assert labels.shape == (400,)
    assert adjusted_rand_score(y, labels) >= 0.95
    # The autoencoder, like t-SNE, sees only the subsample.
    assert embedded == [150]


def test_tsne_start_separates_digit_classes_better_than_kmeans():
    from sklearn.cluster import KMeans

    X, y = digits(600)
    tsne = _starts.tsne_labels(_starts.tsne_features(X.astype(np.float32), 0), 10, 0)
    kmeans = KMeans(10, n_init=4, random_state=0).fit_predict(X)
    assert adjusted_rand_score(y, tsne) > adjusted_rand_score(y, kmeans) + 0.05


def test_tsne_map_gets_closer_to_its_optimum_than_scikit_learns_default_step():
    # The same 500 iterations with scikit-learn's "auto" step leave the
    # unexaggerated phase short of converged (a higher KL divergence).
    from sklearn.manifold import TSNE

    X, _ = digits(1797)
    values = _starts._principal_components(X.astype(np.float32), 0)
    ours = _starts.tsne_estimator(len(values), 0).fit(values)
    auto = TSNE(2, init="pca", max_iter=500, learning_rate="auto", random_state=0).fit(values)
    assert ours.kl_divergence_ < 0.97 * auto.kl_divergence_


def test_coarser_barnes_hut_map_partitions_digits_as_well_as_scikit_learns_angle(monkeypatch):
    X, y = digits(1000)
    features = _starts.tsne_features(X.astype(np.float32), 0)
    ours = adjusted_rand_score(y, _starts.tsne_labels(features, 10, 0))
    monkeypatch.setattr(_starts, "_TSNE_ANGLE", 0.5)
    finer = adjusted_rand_score(
        y, _starts.tsne_labels(_starts.tsne_features(X.astype(np.float32), 0), 10, 0))
    assert _starts.tsne_estimator(1000, 0).angle == 0.5
    assert ours >= finer - 0.02


def test_map_start_keeps_the_best_separated_fit_even_when_less_likely():
    # A wide island and two small ones close together: a fit that cuts the
    # wide one in two and merges the small ones must lose to the islands,
    # however likely the mixture found it.
    rng = np.random.RandomState(0)
    embedding = np.r_[rng.normal((0.0, 0.0), 1.0, (60, 2)), rng.normal((8.0, 0.0), 0.3, (30, 2)),
                      rng.normal((8.0, 3.0), 0.3, (30, 2))]
    islands = np.repeat([0, 1, 2], [60, 30, 30])
    splits = np.r_[(embedding[:60, 0] > 0).astype(int), np.full(60, 2)]
    assert _starts.chosen_map_fit(embedding, [(splits, -2.0), (islands, -2.6)], 3, seed=0) is islands
    # Equally separated fits go to the likelier.
    same = islands.copy()
    assert _starts.chosen_map_fit(embedding, [(islands, -2.6), (same, -2.5)], 3, seed=0) is same


def test_map_start_prefers_even_clusters_among_nearly_equally_separated_fits():
    # Two islands close together and a long one: merging the pair and
    # cutting the long island in two is a shade better separated, but
    # leaves one cluster twice the size of the others.
    rng = np.random.RandomState(0)
    embedding = np.r_[rng.normal((0.0, 0.0), 0.3, (50, 2)), rng.normal((2.0, 0.0), 0.3, (50, 2)),
                      rng.normal((12.0, 0.0), (2.0, 0.3), (50, 2))]
    islands = np.repeat([0, 1, 2], 50)
    merged = np.r_[np.zeros(100, dtype=int), 1 + (embedding[100:, 0] > 12.0)]
    assert silhouette_score(embedding, merged) > silhouette_score(embedding, islands)
    assert _starts.chosen_map_fit(embedding, [(merged, -2.0), (islands, -2.1)], 3, seed=0) is islands


def test_evenness_is_one_for_equal_sizes_and_falls_as_one_cluster_grows():
    assert _starts._evenness(np.repeat([0, 1, 2], 10), 3) == pytest.approx(1.0)
    assert _starts._evenness(np.repeat([0, 1, 2], [10, 10, 80]), 3) < _starts._evenness(
        np.repeat([0, 1, 2], [20, 20, 60]), 3) < 1.0
    # An empty cluster makes a fit less even than one that fills them all.
    assert _starts._evenness(np.repeat([0, 1], 15), 3) < _starts._evenness(
        np.repeat([0, 1, 2], [10, 10, 10]), 3)
    assert _starts._evenness(np.zeros(5, dtype=int), 3) == 0.0
    assert _starts._evenness(np.zeros(5, dtype=int), 1) == 0.0


def test_map_start_judges_a_large_map_on_a_subsample(monkeypatch):
    monkeypatch.setattr(_starts, "_MAP_SILHOUETTE_ROWS", 50)
    judged = []
    real = _starts._silhouette

    def spy(distances, labels):
        judged.append(distances.shape)
        return real(distances, labels)

    monkeypatch.setattr(_starts, "_silhouette", spy)
    embedding = np.random.RandomState(0).normal(size=(400, 2))
    labels = (embedding[:, 0] > 0).astype(int)
    # A single cluster has no silhouette and loses to any split.
    one_cluster = np.zeros(400, dtype=int)
    assert _starts.chosen_map_fit(embedding, [(one_cluster, 0.0), (labels, -1.0)], 2, 0) is labels
    assert judged == [(50, 50), (50, 50)]


def test_map_mixture_labels_every_point_and_survives_duplicated_points():
    islands = np.repeat(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), 20, axis=0)
    labels = _starts.map_mixture_labels(islands, 3, seed=0)
    assert adjusted_rand_score(np.repeat(np.arange(3), 20), labels) == 1.0


@pytest.mark.parametrize("start", [_starts.mixture_start, _starts.map_mixture_labels])
def test_mixture_starts_fit_on_one_thread_whatever_the_fit_has(monkeypatch, start):
    threads_seen = []

    class Recording(_starts.GaussianMixture):
        def fit(self, X, y=None):
            threads_seen.extend(pool["num_threads"] for pool in threadpool_info())
            return super().fit(X, y)

    monkeypatch.setattr(_starts, "GaussianMixture", Recording)
    X, _ = blobs(n_samples=300, centers=3, n_features=2)
    with threadpool_limits(limits=2):
        before = [pool["num_threads"] for pool in threadpool_info()]
        start(X, 3, 0)
        after = [pool["num_threads"] for pool in threadpool_info()]
    assert threads_seen and max(threads_seen) == 1
    assert after == before  # the fit's own limit again once the mixtures are done


def test_mixture_start_labels_do_not_depend_on_the_threads():
    # Full covariances in 30 dimensions: BLAS on two threads sums them in
    # another order, enough for the chosen mixture to label some rows otherwise.
    X = StandardScaler().fit_transform(load_breast_cancer().data)
    labels = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            labels.append(_starts.mixture_start(X, 3, 0))
    np.testing.assert_array_equal(labels[0], labels[1])


def test_mixture_start_reaches_the_same_partition_from_every_seed():
    # Wine's diagonal mixture has a local optimum 0.88 in ARI from the
    # likeliest fit, which too few inits leave to the seed; and some seeds
    # find a full-covariance fit with a cluster of 6 rows in 13 dimensions,
    # the lowest BIC of all, which the start must pass over.
    X = StandardScaler().fit_transform(load_wine().data).astype(np.float32)
    starts = [_starts.mixture_start(X, 3, seed) for seed in range(20, 30)]
    assert min(np.bincount(labels).min() for labels in starts) > X.shape[1]
    assert all(adjusted_rand_score(starts[0], labels) == 1.0 for labels in starts)


def test_mixture_start_fits_a_subsample_and_labels_every_row(monkeypatch):
    monkeypatch.setattr(_starts, "_MIXTURE_MAX_ROWS", 150)
    fitted_rows = []

    class Recording(_starts.GaussianMixture):
        def fit(self, X, y=None):
            fitted_rows.append(len(X))
            return super().fit(X, y)

    monkeypatch.setattr(_starts, "GaussianMixture", Recording)
    X, y = blobs(n_samples=400, centers=3, n_features=4)
    labels = _starts.mixture_start(X.astype(np.float32), 3, 0)
    assert set(fitted_rows) == {150}
    assert labels.shape == (400,)
    assert adjusted_rand_score(y, labels) >= 0.95


def test_mixture_start_survives_duplicated_points():
    X = np.repeat(np.arange(4.0)[:, None], 10, axis=0) @ np.ones((1, 3))
    labels = _starts.mixture_start(X.astype(np.float32), 4, 0)
    assert len(np.unique(labels)) == 4


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("init_params", ["auto", "tsne", "gmm", "spectral", "kmeans", "autoencoder"])
@pytest.mark.parametrize("shape", [(4, 5), (30, 80)])
def test_every_start_fits_identical_rows_without_crash_or_runtime_warning(init_params, shape):
    # Identical rows made t-SNE segfault and PCA divide 0 by 0 (RuntimeWarning
    # is an error in this suite), so this also guards the interpreter itself.
    X = np.full(shape, 0.25)
    model = InfoCatVAE(n_clusters=2, init_params=init_params, **QUICK).fit(X)
    assert np.all(np.isfinite(model.score_samples(X)))
    assert model.predict(X).shape == (shape[0],)


def _duplicate_point_warnings(**filter_kwargs):
    """The "fewer distinct points than clusters" warnings a mixture start
    passes on for two distinct rows and three clusters, every warning shown
    unless ``filter_kwargs`` name some to ignore."""
    X = np.repeat(np.array([[0.0, 1.0, 2.0], [3.0, 1.0, 0.0]]), 20, axis=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if filter_kwargs:
            warnings.filterwarnings("ignore", **filter_kwargs)
        InfoCatVAE(n_clusters=3, init_params="gmm", **QUICK).fit(X)
    return [w for w in caught if "distinct clusters" in str(w.message)]


def test_a_start_passes_each_warning_on_once():
    # The mixture start fits twelve k-means inits, each of which warned.
    assert len(_duplicate_point_warnings()) == 1


def test_warnings_from_a_start_still_obey_filters_on_their_module():
    assert _duplicate_point_warnings(module="sklearn") == []
    assert len(_duplicate_point_warnings(module="numpy")) == 1


def test_warnings_from_a_start_that_fails_are_still_passed_on(monkeypatch):
    def failing_start(values, n_clusters, seed):
        warnings.warn("said before failing", UserWarning)
        raise ValueError("the start failed")

    gmm = _starts.STARTS["gmm"]
    monkeypatch.setitem(_starts.STARTS, "gmm", _starts.Start(gmm.features, failing_start))
    X, _ = blobs(n_samples=60, centers=3, n_features=4)
    with pytest.warns(UserWarning, match="said before failing"):
        with pytest.raises(ValueError, match="the start failed"):
            InfoCatVAE(n_clusters=3, init_params="gmm", **QUICK).fit(X)


def test_guide_kept_on_keeps_the_starting_partition(monkeypatch):
    X, _ = digits(500)
    starts = []
    tsne = _starts.STARTS["tsne"]

    def recorded(*args, **kwargs):
        labels = tsne.labels(*args, **kwargs)
        starts.append(labels)
        return labels

    monkeypatch.setitem(_starts.STARTS, "tsne", _starts.Start(tsne.features, recorded, True))
    on = InfoCatVAE(8, guide_iter=None, **QUICK).fit(X)
    off = InfoCatVAE(8, guide_iter=3, **QUICK).fit(X)
    # Same seed, same start: the two fits differ only in the guide.
    np.testing.assert_array_equal(starts[0], starts[1])
    agreement_on = adjusted_rand_score(starts[0], on.labels_)
    agreement_off = adjusted_rand_score(starts[0], off.labels_)
    assert agreement_on >= 0.9
    assert agreement_on > agreement_off


@pytest.mark.parametrize("guide_iter", [0, 5])
def test_guide_iter_integer_and_zero_train(guide_iter):
    X, _ = blobs(200, centers=3)
    model = InfoCatVAE(3, guide_iter=guide_iter, **QUICK).fit(X)
    assert np.isfinite(model.score(X))


def test_latent_silhouette_scorer_is_a_label_free_grid_search_score():
    X, _ = blobs(400, centers=4, n_features=10)
    search = GridSearchCV(
        InfoCatVAE(**QUICK), {"n_clusters": [2, 4, 6]}, scoring=latent_silhouette_scorer, cv=2
    ).fit(X)
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores >= -1) & (scores <= 1))
    assert search.best_params_ == {"n_clusters": 4}


def test_latent_silhouette_is_minus_one_for_a_single_cluster():
    class OneCluster:
        def predict(self, X):
            return np.zeros(len(X), dtype=int)

        def transform(self, X):
            return X

    assert latent_silhouette_scorer(OneCluster(), np.random.rand(10, 2)) == -1.0


def test_latent_silhouette_subsamples_large_input_of_any_array_type():
    pd = pytest.importorskip("pandas")
    X, _ = blobs(300, centers=3)
    model = InfoCatVAE(3, **QUICK).fit(X)
    full = latent_silhouette_scorer(model, X)
    sub = latent_silhouette_scorer(model, pd.DataFrame(X), max_samples=120)
    assert -1 <= sub <= 1
    # Well-separated blobs stay well separated on a subsample.
    assert sub == pytest.approx(full, abs=0.1)


@pytest.mark.parametrize("bfloat16", [True, False])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_autoencoder_embedding_is_trained_and_reproducible(monkeypatch, likelihood, bfloat16):
    # Whether the autoencoder trains under bfloat16 on the CPU depends on
    # the CPU's instructions: both ways are checked, whatever this CPU has.
    monkeypatch.setattr(_device, "_cpu_multiplies_bfloat16", lambda: bfloat16)
    X, y = digits(400)
    if likelihood == "gaussian":
        X = StandardScaler().fit_transform(X)
    data = X.astype(np.float32)
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    first = _training.learned_embedding(data, likelihood, cpu, 20, 32, 1e-3)[0]
    torch.manual_seed(0)
    again = _training.learned_embedding(data, likelihood, cpu, 20, 32, 1e-3)[0]
    assert first.shape == (400, 10) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    torch.manual_seed(0)
    untrained = _training.learned_embedding(data, likelihood, cpu, 0, 32, 1e-3)[0]
    # The classes come out of training: k-means finds them in the trained
    # embedding far better than in a random network's.
    from sklearn.cluster import KMeans

    def ari(embedding):
        labels = KMeans(len(np.unique(y)), n_init=4, random_state=0).fit_predict(embedding)
        return adjusted_rand_score(y, labels)

    assert ari(first) > ari(untrained) + 0.1


def test_tsne_features_weigh_components_and_embedding_equally():
    rng = np.random.RandomState(0)
    values = rng.normal(5.0, 30.0, size=(200, 50))
    data = rng.uniform(size=(200, 64)).astype(np.float32)
    features = _starts.map_input(values, data, embed=lambda rows: 1e-3 * rows[:, :10])
    assert features.shape == (200, 60)
    for block in (features[:, :50], features[:, 50:]):
        np.testing.assert_allclose(block.mean(0), 0.0, atol=1e-6)
        assert (block**2).sum(1).mean() == pytest.approx(1.0)
    assert _starts.map_input(values) is values


@pytest.mark.parametrize("pretrain_iter", [0, 3])
def test_tsne_start_learns_an_embedding_only_when_pretrain_iter_is_positive(monkeypatch, pretrain_iter):
    calls = []
    learned_embedding = _training.learned_embedding

    def recorded(rows, *args):
        calls.append(rows.shape)
        return learned_embedding(rows, *args)

    monkeypatch.setattr(_training, "learned_embedding", recorded)
    X, _ = digits(300)
    InfoCatVAE(5, init_params="tsne", **{**QUICK, "pretrain_iter": pretrain_iter}).fit(X)
    assert calls == ([(300, 64)] if pretrain_iter else [])


def test_encoder_starts_from_the_autoencoders_first_layer(monkeypatch):
    # The start's autoencoder and the model's encoder read the same rows;
    # training should begin from the autoencoder's first layer, not a random one.
    from catvae_sklearn import _estimator

    layers, trunks = [], []
    learned_embedding, train = _training.learned_embedding, _estimator.train

    def recorded_embedding(*args):
        embedding, layer = learned_embedding(*args)
        layers.append(layer)
        return embedding, layer

    def recorded_train(module, *args, **kwargs):
        trunks.append([p.detach().cpu().numpy().copy() for p in module.trunk[0].parameters()])
        return train(module, *args, **kwargs)

    monkeypatch.setattr(_training, "learned_embedding", recorded_embedding)
    monkeypatch.setattr(_estimator, "train", recorded_train)
    X, _ = digits(300)
    InfoCatVAE(5, init_params="autoencoder", **{**QUICK, "hidden_layer_sizes": (500,)}).fit(X)
    assert len(layers) == 1 and len(trunks) == 1
    for started, learned in zip(trunks[0], layers[0]):
        np.testing.assert_array_equal(started, learned)


def _with_noise_pixels(X, n_noise, seed=0):
    """``X`` with ``n_noise`` columns of uniform noise in [0, 1] beside it:
    variance that 50 principal components cannot keep."""
    noise = np.random.default_rng(seed).uniform(size=(len(X), n_noise))
    return np.hstack([X, noise])


def test_principal_components_lose_data_only_where_they_drop_variance():
    X, _ = digits(300)  # 64 pixels: 50 components keep nearly all their variance
    assert not _starts.principal_components_lose_data(X.astype(np.float32), 0)
    assert _starts.principal_components_lose_data(_with_noise_pixels(X, 100), 0)
    assert not _starts.principal_components_lose_data(np.full((100, 80), 0.5), 0)


def test_auto_pretrain_iter_trains_the_autoencoder_only_where_the_components_lose_data(
    monkeypatch, capsys
):
    epochs = []
    learned_embedding = _training.learned_embedding

    def recorded(rows, likelihood, device, n_epochs, *args):
        epochs.append(n_epochs)
        return learned_embedding(rows, likelihood, device, n_epochs, *args)

    monkeypatch.setattr(_training, "learned_embedding", recorded)
    monkeypatch.setattr(_starts, "_AUTO_PRETRAIN_ITER", 2)
    X, _ = digits(300)
    settings = {**QUICK, "pretrain_iter": "auto", "max_iter": 2}
    InfoCatVAE(5, init_params="tsne", verbose=1, **settings).fit(X)
    assert epochs == []
    assert "autoencoder: skipped" in capsys.readouterr().out
    InfoCatVAE(5, init_params="tsne", **settings).fit(_with_noise_pixels(X, 100))
    assert epochs == [2]
    InfoCatVAE(5, init_params="autoencoder", **settings).fit(X)
    assert epochs == [2, 2]
    assert InfoCatVAE().pretrain_iter == "auto"


def test_autoencoder_start_finds_separated_blobs():
    X, y = blobs(300, centers=3, n_features=20)
    model = InfoCatVAE(3, init_params="autoencoder", **QUICK).fit(X)
    assert adjusted_rand_score(y, model.labels_) >= 0.95


def _calls_of(monkeypatch, name):
    """A list that grows by one each time ``_training.<name>`` is called."""
    calls = []
    original = getattr(_training, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_training, name, counted)
    return calls


@pytest.fixture
def start_feature_calls(monkeypatch):
    """Calls of a start's first step (the map and what it needs)."""
    return _calls_of(monkeypatch, "start_features")


@pytest.fixture
def start_label_calls(monkeypatch):
    """Calls of a start's second step (its labels)."""
    return _calls_of(monkeypatch, "start_labels")


def test_a_cached_start_gives_the_fit_an_uncached_one_gives(tmp_path, start_feature_calls):
    X, _ = digits(300)
    calls = start_feature_calls
    uncached = InfoCatVAE(4, **QUICK).fit(X)
    first = InfoCatVAE(4, memory=str(tmp_path), **QUICK).fit(X)
    # Another K and delta on the same rows read the start's first step back.
    InfoCatVAE(5, subspace_dim=3, memory=str(tmp_path), **QUICK).fit(X)
    # So does another training rate: the autoencoder trains at a rate of its own.
    InfoCatVAE(4, memory=str(tmp_path), **{**QUICK, "learning_rate_init": 3e-3}).fit(X)
    again = InfoCatVAE(4, memory=str(tmp_path), **QUICK).fit(X)
    assert len(calls) == 2  # the uncached fit and the first cached one
    for cached in (first, again):
        np.testing.assert_array_equal(cached.labels_, uncached.labels_)
        assert cached.loss_curve_ == uncached.loss_curve_
        np.testing.assert_array_equal(cached.predict_proba(X), uncached.predict_proba(X))


def test_a_search_over_k_and_delta_computes_the_start_once_per_training_set(
    tmp_path, start_feature_calls, start_label_calls
):
    from joblib import Memory

    X, _ = digits(300)
    calls = start_feature_calls
    search = GridSearchCV(
        InfoCatVAE(memory=Memory(tmp_path, verbose=0), **{**QUICK, "max_iter": 2}),
        {"n_clusters": [3, 4], "subspace_dim": [1, 2]},
        cv=2,
    ).fit(X)
    # 2 folds and the refit on all rows: 3 training sets for 9 fits.
    assert len(calls) == 3
    # Labels once per fold and n_clusters, and once for the refit.
    assert len(start_label_calls) == 2 * 2 + 1
    assert search.best_estimator_.n_clusters in (3, 4)


def test_verbose_names_each_phase_and_quiet_prints_nothing(capsys):
    X, _ = digits(300)
    model = InfoCatVAE(4, verbose=1, **QUICK).fit(X)
    out = capsys.readouterr()
    for phase in ("autoencoder", "map", "mixture", "training"):
        assert f"[InfoCatVAE] {phase}:" in out.out
        assert model.phase_seconds_[phase] >= 0
    assert sum(model.phase_seconds_.values()) > 0
    InfoCatVAE(4, verbose=0, **QUICK).fit(X)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_verbose_says_when_the_map_came_from_the_cache(capsys, tmp_path):
    X, _ = digits(300)
    for _ in range(2):
        InfoCatVAE(4, verbose=1, memory=str(tmp_path), **QUICK).fit(X)
    first, second = capsys.readouterr().out.split("[InfoCatVAE] training:")[:2]
    assert "[InfoCatVAE] map:" in first and "(cached)" not in first
    assert "(cached)" in second and "[InfoCatVAE] autoencoder:" not in second
    assert "(cached)" in second.split("[InfoCatVAE] mixture:")[1]
