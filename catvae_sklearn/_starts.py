"""Where training starts: an initial partition of the training data.

Each start, registered in :data:`STARTS` under its ``init_params`` name, runs
in two steps. ``features(data, seed, embed)`` computes what does not depend
on the number of clusters (principal components, a t-SNE map), the costly
part that a grid search over ``n_clusters`` and ``subspace_dim`` can cache;
``labels(features, n_clusters, seed)`` partitions it, one label per row.
``data`` is the training data as the encoder sees it (standardised for a
Gaussian likelihood), a float32 numpy array; ``embed`` maps rows of ``data``
to the embedding of an autoencoder trained on them, or is None when none is
learned (``pretrain_iter=0``, or ``"auto"`` where :func:`pretrain_epochs`
finds none is needed). Nothing here knows about torch: the training
module builds ``embed`` and turns the labels into the guide that q(c|x) is
steered towards.
"""

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import entropy
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import pairwise_distances, pairwise_distances_argmin, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

# Wide data are reduced to this many principal components before a start
# clusters or maps them.
_PRINCIPAL_COMPONENTS = 50

# Past this many features a full-covariance mixture has too many parameters
# and Euclidean distances concentrate: ``init_params="auto"`` switches from
# a mixture on the data to a mixture on a t-SNE map.
_AUTO_TSNE_MIN_FEATURES = 50

# t-SNE costs O(n log n) with a large constant: past this many rows it runs on
# a random subsample and the other rows take their nearest neighbour's label.
_TSNE_MAX_ROWS = 20_000

# Mixture fits on the t-SNE map, and how they are judged; see chosen_map_fit.
# The silhouette costs O(n^2): it is taken on this many points of the map,
# the same for every fit.
_MAP_MIXTURE_INITS = 10
_MAP_SILHOUETTE_ROWS = 2_000

# The autoencoder's embedding joins the map's input (pretrain_iter="auto")
# only where the principal components lose part of the data. When they keep
# all but this share of its variance, t-SNE already sees the data nearly
# whole, and an embedding learned from a few thousand rows adds its own noise.
_EMBEDDING_MIN_DISCARDED_VARIANCE = 0.01
_AUTO_PRETRAIN_ITER = 50

# t-SNE's step size per row mapped, in scikit-learn's units. Its "auto" rate
# (1/48) suits the 250 exaggerated iterations but leaves the unexaggerated
# ones too few to draw the classes apart as islands; openTSNE too takes a
# larger step once exaggeration ends.
_TSNE_LEARNING_RATE_PER_ROW = 1 / 12

# Barnes-Hut's opening angle: a distant group of points whose angular size is
# below it acts on a point as one. Most of a map's time goes to these forces,
# and scikit-learn's 0.5 is finer than a map that is only clustered needs:
# 0.7 draws the same islands for the mixtures in less time. Past 0.8 the
# error of the approximation grows quickly (scikit-learn's TSNE docstring).
_TSNE_ANGLE = 0.7

# A full covariance per cluster has d(d+1)/2 parameters, more than small
# tabular data can pin down, so the mixture start lets BIC choose among these.
_DATA_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# EM from one k-means start often stops at a local optimum of the
# likelihood, a few rows labelled otherwise than at the likeliest fit, and
# the seed then decides which: each covariance type keeps the best of this
# many starts. Like the t-SNE map, they see at most ``_MIXTURE_MAX_ROWS``
# random rows, so the start's time stays bounded as the data grow; the
# chosen mixture then labels every row.
_DATA_MIXTURE_INITS = 10
_MIXTURE_MAX_ROWS = 20_000


def resolve_init(init_params, n_features):
    """The start ``init_params="auto"`` stands for, given the data's width."""
    if init_params != "auto":
        return init_params
    return "tsne" if n_features > _AUTO_TSNE_MIN_FEATURES else "gmm"


def pretrain_epochs(pretrain_iter, init_params, data, seed):
    """The autoencoder epochs ``pretrain_iter`` stands for: itself when an
    integer; for ``"auto"``, ``_AUTO_PRETRAIN_ITER`` where the start
    ``init_params`` asks for an embedding of ``data`` (see
    :attr:`Start.wants_embedding`), else 0."""
    if pretrain_iter != "auto":
        return pretrain_iter
    wants = STARTS[init_params].wants_embedding
    with _guarded():
        return _AUTO_PRETRAIN_ITER if wants is not None and wants(data, seed) else 0


def start_features(init_params, data, seed, embed=None):
    """Step one of the start ``init_params`` (not ``"auto"``): see the module docstring."""
    with _guarded():
        return STARTS[init_params].features(data, seed, embed)


def start_labels(init_params, features, n_clusters, seed):
    """Step two of the start ``init_params``: a label per row, as int64."""
    with _guarded():
        return np.asarray(STARTS[init_params].labels(features, n_clusters, seed), dtype=np.int64)


@contextlib.contextmanager
def _guarded():
    # Constant data have zero total variance, so the PCA inside these starts
    # (ours and t-SNE's own initialisation) computes an explained-variance
    # ratio of 0/0. Only the projections are used, and they stay finite.
    with np.errstate(divide="ignore", invalid="ignore"), _each_warning_once():
        yield


@contextlib.contextmanager
def _each_warning_once():
    """Show each distinct warning raised inside at most once.

    A start fits many k-means and mixtures (the mixture start forty: four
    covariance types, ten inits each), and data with fewer distinct rows
    than clusters made every one of them warn about duplicate points. The
    caller's filters still decide, at the point each warning is raised,
    whether it is shown, ignored or raised: only what would be shown again
    is dropped.
    """
    with warnings.catch_warnings():
        show = warnings.showwarning
        shown = set()

        def show_once(message, category, *args, **kwargs):
            key = (category, str(message))
            if key not in shown:
                shown.add(key)
                show(message, category, *args, **kwargs)

        warnings.showwarning = show_once
        yield


# ------------------------------------------------------------------ starts
def _kmeans(n_clusters, seed):
    """The k-means that the starts use, and fall back on where a mixture fails."""
    return KMeans(n_clusters=n_clusters, n_init=4, random_state=seed)


def kmeans_start(data, n_clusters, seed):
    """k-means on the data."""
    return _kmeans(n_clusters, seed).fit_predict(data)


def _data(data, seed, embed):
    return data


def _embedding(data, seed, embed):
    """The autoencoder's embedding of ``data`` (the data without one)."""
    return data if embed is None else embed(data)


def _principal_components_of(data, seed, embed):
    return _principal_components(data, seed)


def spectral_start(values, n_clusters, seed):
    """Spectral clustering of a 10-nearest-neighbour graph of ``values``.

    Follows the data's manifold where k-means only sees convex blobs.
    """
    spectral = SpectralClustering(
        n_clusters,
        affinity="nearest_neighbors",
        n_neighbors=min(10, values.shape[0] - 1),
        assign_labels="cluster_qr",
        random_state=seed,
    )
    with warnings.catch_warnings():
        # A k-NN graph of well-separated clusters is often disconnected: that
        # is the easy case for spectral clustering, not a problem.
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        return spectral.fit_predict(values)


def mixture_start(values, n_clusters, seed):
    """The Gaussian mixture of ``values`` whose covariance structure (full,
    tied, diagonal or spherical) has the lowest BIC, fitted on one thread
    (see :func:`_one_thread`) to at most ``_MIXTURE_MAX_ROWS`` of them."""
    fitted = values[_random_rows(len(values), _MIXTURE_MAX_ROWS, seed)]
    with _one_thread():
        mixture = _lowest_bic_mixture(fitted, n_clusters, seed)
        if mixture is None:  # k-means has no covariances to collapse
            return kmeans_start(values, n_clusters, seed)
        return mixture.predict(values)


def _lowest_bic_mixture(values, n_clusters, seed):
    """Of the mixtures of each covariance type that hold up (see
    :func:`_holds_up`), the one with the lowest BIC; None if none does."""
    best, best_bic = None, np.inf
    for covariance_type in _DATA_COVARIANCE_TYPES:
        mixture = GaussianMixture(
            n_clusters,
            covariance_type=covariance_type,
            n_init=_DATA_MIXTURE_INITS,
            random_state=seed,
        )
        try:
            mixture.fit(values)
        except ValueError:
            # A component collapsed onto duplicated points (its covariance
            # is singular even after regularisation).
            continue
        bic = mixture.bic(values)
        if bic < best_bic and _holds_up(mixture, values):
            best, best_bic = mixture, bic
    return best


def _holds_up(mixture, values):
    """Whether each component of a fitted ``mixture`` holds enough rows of
    ``values`` to estimate its own covariance: one more than the data's
    dimensions for a full covariance, two for a diagonal or spherical one,
    none for a tied one, which all components share.

    A component on fewer rows lies nearly in a subspace of them, its
    density held finite only by the covariance's regularisation, and its
    likelihood is so high that BIC prefers the fit, one cluster of a
    handful of rows, to every fit that partitions the data.
    """
    needed = {"full": values.shape[1] + 1, "diag": 2, "spherical": 2, "tied": 0}
    sizes = np.bincount(mixture.predict(values), minlength=mixture.n_components)
    return bool(sizes.min() >= needed[mixture.covariance_type])


@dataclass(frozen=True)
class TsneMap:
    """What the ``"tsne"`` start keeps of step one: the principal
    components of every row, the rows mapped (all, or a random subsample of
    ``_TSNE_MAX_ROWS``), and their 2-D map (None when every row is alike)."""

    values: np.ndarray
    subset: np.ndarray
    embedding: np.ndarray | None


def tsne_features(data, seed, embed=None):
    """A 2-D t-SNE map of the principal components of ``data``, joined by
    ``embed``'s embedding when there is one (see :func:`map_input`).

    t-SNE keeps each point's neighbourhood, so the classes of image data
    come out as separate islands of arbitrary shape.
    """
    values = _principal_components(data, seed)
    if not _has_spread(values):
        # scikit-learn's Barnes-Hut t-SNE crashes the interpreter
        # (segmentation fault) when every point is the same.
        return TsneMap(values, np.arange(values.shape[0]), None)
    subset = _mapped_rows(len(values), seed)
    embedding = tsne_map(map_input(values[subset], data[subset], embed), seed)
    return TsneMap(values, subset, embedding)


def tsne_labels(features, n_clusters, seed):
    """Gaussian-mixture clusters of the t-SNE map (see :func:`chosen_map_fit`),
    which separates islands that k-means on the raw pixels cannot; rows left
    off the map take their nearest mapped neighbour's label."""
    if features.embedding is None:
        return kmeans_start(features.values, n_clusters, seed)
    labels = map_mixture_labels(features.embedding, n_clusters, seed)
    if len(features.subset) < len(features.values):
        mapped = features.values[features.subset]
        labels = KNeighborsClassifier(1).fit(mapped, labels).predict(features.values)
    return labels


def _mapped_rows(n_rows, seed):
    """Indices of the rows the t-SNE map sees: all, or ``_TSNE_MAX_ROWS``
    drawn at random."""
    return _random_rows(n_rows, _TSNE_MAX_ROWS, seed)


def _random_rows(n_rows, max_rows, seed):
    """Indices, in order, of all ``n_rows`` rows or of ``max_rows`` drawn at random."""
    if n_rows <= max_rows:
        return np.arange(n_rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_rows, max_rows, replace=False))


def principal_components_lose_data(data, seed):
    """Whether the principal components that the t-SNE map starts from leave
    more than ``_EMBEDDING_MIN_DISCARDED_VARIANCE`` of the variance of the
    rows it maps out."""
    rows = data[_mapped_rows(len(data), seed)]
    pca = _pca(rows, seed)
    if pca is None or not _has_spread(rows):
        return False
    pca.fit(rows)
    return 1.0 - float(pca.explained_variance_ratio_.sum()) > _EMBEDDING_MIN_DISCARDED_VARIANCE


def _always(data, seed):
    return True


@dataclass(frozen=True)
class Start:
    """A start in two steps; see the module docstring. ``wants_embedding``:
    None when its first step ignores the autoencoder's embedding, else
    ``wants_embedding(data, seed)`` says whether ``pretrain_iter="auto"``
    learns one for ``data``."""

    features: Callable
    labels: Callable
    wants_embedding: Callable | None = None

    @property
    def embeds(self):
        """Whether its first step uses the autoencoder's embedding."""
        return self.wants_embedding is not None


STARTS = {
    "tsne": Start(tsne_features, tsne_labels, wants_embedding=principal_components_lose_data),
    "gmm": Start(_principal_components_of, mixture_start),
    "kmeans": Start(_data, kmeans_start),
    "spectral": Start(_principal_components_of, spectral_start),
    "autoencoder": Start(_embedding, kmeans_start, wants_embedding=_always),
}


# ------------------------------------------------------------- a stream
def kmeans_centres(data, n_clusters, seed):
    """k-means labels and centres of ``data``: the start of a stream."""
    kmeans = _kmeans(n_clusters, seed).fit(data)
    return kmeans.labels_, kmeans.cluster_centers_


def nearest_centres(data, centres):
    """Index of the nearest of ``centres`` to each row of ``data``."""
    return pairwise_distances_argmin(data, centres)


# -------------------------------------------------------------- helpers
@contextlib.contextmanager
def _one_thread():
    """Limit BLAS and OpenMP to one thread.

    A mixture's EM on a few thousand rows of a few dimensions is many small
    products and reductions, which run faster on one thread than split
    between several; and its result then no longer depends on the number
    of threads the fit has.
    """
    with threadpool_limits(limits=1):
        yield


def _pca(values, seed):
    """The (unfitted) PCA that reduces ``values`` to ``_PRINCIPAL_COMPONENTS``
    dimensions, or None when they are no wider."""
    if values.shape[1] <= _PRINCIPAL_COMPONENTS:
        return None
    return PCA(min(_PRINCIPAL_COMPONENTS, values.shape[0]), random_state=seed)


def _principal_components(values, seed):
    """``values`` reduced by PCA to ``_PRINCIPAL_COMPONENTS`` dimensions, when wider."""
    pca = _pca(values, seed)
    return values if pca is None else pca.fit_transform(values)


def _has_spread(values):
    """Whether the rows of ``values`` differ by more than float32 round-off."""
    return float(values.std(0).max()) > 1e-6 * (1.0 + float(np.abs(values).max()))


def tsne_map(values, seed):
    """The 2-D t-SNE map of ``values`` that the ``"tsne"`` start clusters."""
    return tsne_estimator(len(values), seed).fit_transform(values)


def tsne_estimator(n_rows, seed):
    """The t-SNE that :func:`tsne_map` fits to ``n_rows`` rows."""
    return TSNE(
        2,
        perplexity=min(30.0, (n_rows - 1) / 3.0),
        learning_rate=max(n_rows * _TSNE_LEARNING_RATE_PER_ROW, 50.0),
        init="pca",
        max_iter=500,
        angle=_TSNE_ANGLE,
        random_state=seed,
    )


def map_input(values, data=None, embed=None):
    """What the ``"tsne"`` start maps: principal components ``values``,
    joined by ``embed(data)`` when an embedding is learned.

    Each block is centred and scaled to a mean squared norm of 1, so both
    weigh equally in t-SNE's distances.
    """
    if embed is None:
        return values
    return np.hstack([_unit_mean_square(values), _unit_mean_square(embed(data))])


def _unit_mean_square(values):
    centred = values - values.mean(0)
    norm = np.sqrt((centred**2).sum(1).mean())
    return centred / max(float(norm), np.finfo(np.float32).tiny)


def map_mixture_labels(embedding, n_clusters, seed):
    """Gaussian-mixture clusters of a t-SNE map; see :func:`chosen_map_fit`.
    Fitted and judged on one thread (see :func:`_one_thread`)."""
    with _one_thread():
        fits = map_mixture_fits(embedding, n_clusters, seed)
        if not fits:
            return kmeans_start(embedding, n_clusters, seed)
        return chosen_map_fit(embedding, fits, n_clusters, seed)


def map_mixture_fits(embedding, n_clusters, seed):
    """``_MAP_MIXTURE_INITS`` mixture fits of a map, as ``(labels,
    log-likelihood per point)``."""
    rng = np.random.RandomState(seed)
    fits = []
    for _ in range(_MAP_MIXTURE_INITS):
        mixture = GaussianMixture(n_clusters, random_state=rng.randint(np.iinfo(np.int32).max))
        try:
            labels = mixture.fit(embedding).predict(embedding)
        except ValueError:  # a component collapsed onto duplicated points
            continue
        fits.append((labels, mixture.score(embedding)))
    return fits


def chosen_map_fit(embedding, fits, n_clusters, seed):
    """The labels of the fit the start keeps, of ``fits`` as
    :func:`map_mixture_fits` returns them.

    t-SNE draws classes as islands, and a mixture can split a long island
    and merge two others at nearly the same likelihood, more often the
    fewer the points. Such a fit leaves one cluster about twice the others
    and one about half. So each fit is judged by how well its clusters are
    separated on the map, the silhouette (on at most
    ``_MAP_SILHOUETTE_ROWS`` points, the same for every fit), plus how even
    their ``n_clusters`` sizes are, the entropy of the sizes over its
    maximum (1 for equal sizes, lower for a fit that leaves one empty): the
    model's prior gives every cluster the same weight, and training with the
    balance term pulls towards equal sizes too. The likelier of equally
    judged fits wins.
    """
    rows = np.random.RandomState(seed).choice(
        len(embedding), min(_MAP_SILHOUETTE_ROWS, len(embedding)), replace=False
    )
    distances = pairwise_distances(embedding[rows])  # once, for every fit
    judged = [(_silhouette(distances, labels[rows]) + _evenness(labels, n_clusters),
               log_likelihood, i)
              for i, (labels, log_likelihood) in enumerate(fits)]
    return fits[max(judged)[2]][0]


def _evenness(labels, n_clusters):
    """Entropy of the sizes of ``n_clusters`` clusters over the largest it can
    be: 1 when every cluster has as many rows, towards 0 as one takes all
    (an empty cluster counts, with size 0); 0 when ``n_clusters`` is 1."""
    if n_clusters < 2:
        return 0.0
    return float(entropy(np.bincount(labels, minlength=n_clusters)) / np.log(n_clusters))


def _silhouette(distances, labels):
    """The silhouette of ``labels`` given the points' pairwise ``distances``;
    -1, the worst, where it is undefined (one cluster, or as many as points)."""
    if not 1 < len(np.unique(labels)) < len(labels):
        return -1.0
    return float(silhouette_score(distances, labels, metric="precomputed"))
