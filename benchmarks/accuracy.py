"""InfoCatVAE against the clusterers a data scientist would try instead.

Every method sees the same data and seeds and is told only the number of
clusters; labels are used only to score (Hungarian accuracy, NMI, ARI).
Fit time is reported beside each, and as a ratio to InfoCatVAE's in the
same run. The peers are KMeans, GaussianMixture, and the manifold pipelines
PCA -> openTSNE (2-D) -> GaussianMixture and PCA -> UMAP (10-D) ->
GaussianMixture (``pip install -e ".[benchmarks]"``).

With ``--unseen`` every method is also fitted on a random half of the rows
and predicts the other half (UMAP through its ``transform``; t-SNE has none).

Writes a markdown table, with machine and versions, to
``benchmarks/results/accuracy_<datasets>.md``.

    python benchmarks/accuracy.py                        # digits, 3 seeds: about a minute
    python benchmarks/accuracy.py --datasets digits mnist mnist_5000 --seeds 5 --peers all
    python benchmarks/accuracy.py --ablations            # CatVAE, the paper's start, ...
    python benchmarks/accuracy.py --unseen --datasets mnist
"""

import argparse
import os
import sys
import time

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_MNIST_DIR, markdown_table, publish  # noqa: E402

from catvae_sklearn import InfoCatVAE  # noqa: E402
from catvae_sklearn.datasets import load_mnist_idx  # noqa: E402
from catvae_sklearn.metrics import cluster_accuracy_score  # noqa: E402

DATASETS = ["digits", "mnist", "mnist_2000", "mnist_5000", "mnist_unequal", "wine",
            "breast_cancer", "iris"]
OURS = "InfoCatVAE (defaults)"


def load(name, mnist_dir):
    """(X, y, description); pixel data in [0, 1], tabular data standardised.
    ``mnist_<n>`` is a fixed random draw of n of the 10,000 MNIST test images;
    ``mnist_unequal`` one whose classes differ four-fold in size."""
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        return X / 16.0, y, "sklearn digits, 1797 x 64, pixels / 16"
    if name.startswith("mnist"):
        X, y = load_mnist_idx(
            os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz"),
            os.path.join(mnist_dir, "t10k-labels-idx1-ubyte.gz"),
        )
        if name == "mnist":
            return X, y, "MNIST test set, 10000 x 784, pixels / 255"
        rng = np.random.RandomState(12345)
        if name == "mnist_unequal":
            # Class c gets 200 * 4^(c/9) images: from 200 (zeros) to 800 (nines).
            sizes = np.round(200 * 4 ** (np.arange(10) / 9)).astype(int)
            rows = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=False)
                                           for c, n in enumerate(sizes)]))
            return X[rows], y[rows], (f"{len(rows)} MNIST test images, class c taking "
                                      "200 * 4^(c/9) of them (fixed draw, seed 12345), "
                                      "pixels / 255")
        n = int(name.split("_")[1])
        rows = np.sort(rng.choice(len(X), n, replace=False))
        return X[rows], y[rows], f"{n} MNIST test images (fixed draw, seed 12345), pixels / 255"
    loaders = {"wine": load_wine, "breast_cancer": load_breast_cancer, "iris": load_iris}
    X, y = loaders[name](return_X_y=True)
    return StandardScaler().fit_transform(X), y, f"sklearn {name}, {X.shape[0]} x {X.shape[1]}, StandardScaler"


class ManifoldMixture(ClusterMixin, BaseEstimator):
    """PCA (to 50 dimensions on wide data) -> a manifold map -> a
    full-covariance GaussianMixture: the pipelines users reach for."""

    def __init__(self, n_clusters, map="tsne", random_state=0):
        self.n_clusters, self.map, self.random_state = n_clusters, map, random_state

    def _map(self):
        if self.map == "tsne":
            from openTSNE import TSNE

            return TSNE(2, n_jobs=os.cpu_count(), random_state=self.random_state)
        import umap

        return umap.UMAP(n_components=10, min_dist=0.0, n_neighbors=30,
                         random_state=self.random_state, n_jobs=1)

    def fit(self, X, y=None):
        self.pca_ = PCA(min(50, X.shape[1]), random_state=self.random_state).fit(X)
        self.map_ = self._map().fit(self.pca_.transform(X))
        embedding = np.asarray(self.map_ if self.map == "tsne" else self.map_.embedding_)
        self.mixture_ = GaussianMixture(self.n_clusters, covariance_type="full",
                                        random_state=self.random_state).fit(embedding)
        self.labels_ = self.mixture_.predict(embedding)
        return self

    def predict(self, X):
        if self.map == "tsne":
            raise NotImplementedError("t-SNE has no transform for unseen rows here")
        return self.mixture_.predict(self.map_.transform(self.pca_.transform(X)))


PEERS = {
    "KMeans (n_init=10)": lambda K, seed: KMeans(K, n_init=10, random_state=seed),
    "GaussianMixture (diag)": lambda K, seed: GaussianMixture(K, covariance_type="diag",
                                                              random_state=seed),
    "PCA -> openTSNE -> GaussianMixture": lambda K, seed: ManifoldMixture(K, "tsne", seed),
}
SLOW_PEERS = {
    "PCA -> UMAP(10-D) -> GaussianMixture": lambda K, seed: ManifoldMixture(K, "umap", seed),
}
ABLATIONS = {
    "CatVAE (info_weight=0)": dict(info_weight=0.0),
    "no balance term (balance_weight=0)": dict(balance_weight=0.0),
    "t-SNE start without the autoencoder (pretrain_iter=0)": dict(pretrain_iter=0),
    "the paper's start (init_params='random')": dict(init_params="random"),
    "k-means start fading over 10 epochs": dict(init_params="kmeans", guide_iter=10),
}


def methods(K, seed, peers, ablations):
    found = {OURS: InfoCatVAE(K, random_state=seed)}
    if ablations:
        found.update({f"InfoCatVAE, {name}": InfoCatVAE(K, random_state=seed, **options)
                      for name, options in ABLATIONS.items()})
    chosen = {**PEERS, **(SLOW_PEERS if peers == "all" else {})}
    found.update({name: make(K, seed) for name, make in chosen.items()})
    return found


def _scores(y, labels):
    return (cluster_accuracy_score(y, labels), normalized_mutual_info_score(y, labels),
            adjusted_rand_score(y, labels))


def evaluate(estimator, X, y, unseen, seed):
    """(accuracy, NMI, ARI, fit seconds[, accuracy on the fitted half,
    accuracy on the unseen half])."""
    start = time.perf_counter()
    labels = estimator.fit_predict(X)
    result = _scores(y, labels) + (time.perf_counter() - start,)
    if not unseen:
        return result
    rows = np.random.RandomState(seed).permutation(len(X))
    fitted, held_out = rows[: len(X) // 2], rows[len(X) // 2 :]
    fitted_accuracy = cluster_accuracy_score(y[fitted], estimator.fit_predict(X[fitted]))
    try:
        predicted = estimator.predict(X[held_out])
    except NotImplementedError:
        return result + (fitted_accuracy, np.nan)
    return result + (fitted_accuracy, cluster_accuracy_score(y[held_out], predicted))


def _median_worst(values, fmt="{:.3f}", worst=np.min):
    values = np.asarray(values, dtype=float)
    if np.isnan(values).all():
        return "n/a"
    return f"{fmt.format(np.nanmedian(values))} / {fmt.format(worst(values))}"


def run(datasets, seeds, mnist_dir, peers, ablations, unseen):
    rows = []
    for name in datasets:
        X, y, description = load(name, mnist_dir)
        K = len(np.unique(y))
        scores = {}
        for seed in range(seeds):
            for method, estimator in methods(K, seed, peers, ablations).items():
                scores.setdefault(method, []).append(evaluate(estimator, X, y, unseen, seed))
                print(f"{name} seed={seed} {method}: acc={scores[method][-1][0]:.3f} "
                      f"({scores[method][-1][3]:.1f}s)", file=sys.stderr, flush=True)
        ours_seconds = np.median([s[3] for s in scores[OURS]])
        for method, values in scores.items():
            v = np.array(values, dtype=float)
            row = [name, method] + [_median_worst(v[:, i]) for i in range(3)] + [
                _median_worst(v[:, 3], "{:.1f}", np.max), f"{np.median(v[:, 3]) / ours_seconds:.2g}"]
            if unseen:
                row += [_median_worst(v[:, 4]), _median_worst(v[:, 5])]
            rows.append(row)
        rows.append([f"*{description}*"] + [""] * (len(rows[-1]) - 1))
    header = ["data", "method", "accuracy (median / worst)", "NMI (median / worst)",
              "ARI (median / worst)", "fit s (median / slowest)", "fit time / InfoCatVAE's"]
    if unseen:
        header += ["fitted half: accuracy", "unseen half: accuracy"]
    return markdown_table(header, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits"], choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--peers", choices=["quick", "all"], default="quick",
                        help="'all' adds PCA -> UMAP -> GaussianMixture")
    parser.add_argument("--ablations", action="store_true", help="InfoCatVAE variants too")
    parser.add_argument("--unseen", action="store_true", help="fit on half, predict the other")
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR)
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    table = run(args.datasets, args.seeds, args.mnist_dir, args.peers, args.ablations,
                args.unseen)
    publish("Clustering accuracy: InfoCatVAE and the alternatives",
            f"Seeds 0..{args.seeds - 1}; each method is given only the number of clusters. "
            "Labels are used only to score.",
            table, "accuracy_" + "_".join(args.datasets) + ".md", save=not args.no_save)


if __name__ == "__main__":
    main()
