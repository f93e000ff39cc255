"""MNIST: the t-SNE + mixture start, with and without the autoencoder.

The default start for wide data is a full-covariance Gaussian mixture on a
2-D t-SNE map, and training keeps that partition. This script builds the
map the way the library does, once from the first 50 principal components
alone (``pretrain_iter=0``) and once from those joined by the embedding of
the start's autoencoder (the default), and fits the mixture on each with
many seeds. For each fit it reports the log-likelihood (what ``n_init``
picks by), the share of the map's nearest-neighbour edges its clusters cut,
the accuracy and two label-free criteria measured on the data, plus the
purity of 30 components: the best accuracy any merging of those pieces
into 10 clusters could reach. Last, the joint start as the library runs it
for several seeds, each with its own autoencoder. Labels are used only to
score. Writes ``results/mnist_start.md``.

    python benchmarks/mnist_start.py --mixture-seeds 16 --autoencoder-seeds 5
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_MNIST_DIR, header_markdown, markdown_table, write_result  # noqa: E402

from catvae_sklearn import InfoCatVAE  # noqa: E402
from catvae_sklearn._training import (  # noqa: E402
    TrainingConfig,
    _principal_components,
    _MAP_MIXTURE_INITS,
    _mixture_labels,
    learned_embedding,
    tsne_features,
    tsne_map,
)
from catvae_sklearn.datasets import load_mnist_idx  # noqa: E402
from catvae_sklearn.metrics import cluster_accuracy_score  # noqa: E402


def within_cluster_sum_of_squares(values, labels):
    return sum(((values[labels == k] - values[labels == k].mean(0)) ** 2).sum()
               for k in np.unique(labels))


def purity(y, labels):
    """Share of points in their piece's majority class."""
    return sum(np.bincount(y[labels == k]).max() for k in np.unique(labels)) / len(y)


def joint_map(X, components, seed):
    """The default start's map: components joined by the autoencoder's embedding,
    the autoencoder trained as a default fit of ``X`` trains it."""
    defaults = InfoCatVAE()
    config = TrainingConfig(
        batch_size=defaults._batch_size(len(X)), learning_rate=defaults.learning_rate_init,
        max_iter=0, tol=0.0, n_iter_no_change=0, info_weight=0.0, balance_weight=0.0,
        min_decode_proba=0.0, pretrain_iter=defaults.pretrain_iter, init_params="tsne",
        guide_iter=None, seed=seed,
    )
    data = torch.as_tensor(X, dtype=torch.float32)
    torch.manual_seed(seed)
    features = tsne_features(
        components, data, lambda rows: learned_embedding(rows, "bernoulli", torch.device("cpu"), config)
    )
    return tsne_map(features, seed)


def mixture_seed_study(title, embedding, map_seconds, components, y, n_seeds):
    """A markdown section: the mixture fitted on one map with many seeds."""
    edges = NearestNeighbors(n_neighbors=11).fit(embedding).kneighbors(
        embedding, return_distance=False)[:, 1:]
    rows, fits = [], []
    for seed in range(n_seeds):
        mixture = GaussianMixture(10, random_state=seed).fit(embedding)
        labels = mixture.predict(embedding)
        fit = (
            mixture.score(embedding),
            cluster_accuracy_score(y, labels),
            within_cluster_sum_of_squares(components, labels) / len(y),
            silhouette_score(components, labels, sample_size=3000, random_state=0),
            (labels[edges] != labels[:, None]).mean(),
        )
        fits.append(fit)
        rows.append([seed, f"{fit[0]:.4f}", f"{fit[1]:.3f}", f"{fit[2]:.2f}", f"{fit[3]:.4f}",
                     f"{100 * fit[4]:.2f}%"])
        print(f"{title}, mixture seed {seed}: log-likelihood {fit[0]:.4f} accuracy {fit[1]:.3f}",
              file=sys.stderr, flush=True)
    fits = np.array(fits)
    best = fits[fits[:, 0].argmax()]
    least_cut = fits[np.lexsort((-fits[:, 0], fits[:, 4]))[0]]
    pieces = GaussianMixture(30, random_state=0).fit(embedding).predict(embedding)

    def rank_correlation(column):
        return spearmanr(fits[:, 1], fits[:, column]).correlation

    most_accurate = fits[:, 1].argmax()

    def rank(column, higher_is_better=True):
        """1-based rank of the most accurate fit under a label-free criterion."""
        values = fits[:, column] if higher_is_better else -fits[:, column]
        return int((values > values[most_accurate]).sum()) + 1

    summary = [
        f"t-SNE map (perplexity 30, 500 iterations): {map_seconds:.1f} s",
        f"accuracy over {n_seeds} mixture seeds: median "
        f"{np.median(fits[:, 1]):.3f}, range {fits[:, 1].min():.3f} to {fits[:, 1].max():.3f}",
        f"highest-likelihood fit (what n_init would keep): accuracy {best[1]:.3f}",
        f"fit that cuts fewest of the map's 10-nearest-neighbour edges: accuracy "
        f"{least_cut[1]:.3f}",
        f"rank correlation with accuracy: log-likelihood {rank_correlation(0):+.2f}, "
        f"within-cluster sum of squares in PCA-50 {rank_correlation(2):+.2f}, "
        f"silhouette in PCA-50 {rank_correlation(3):+.2f}, "
        f"map edges cut {rank_correlation(4):+.2f}",
        f"the most accurate fit ({fits[most_accurate, 1]:.3f}) ranks {rank(0)} of "
        f"{len(fits)} by log-likelihood, {rank(2, higher_is_better=False)} by within-cluster "
        f"sum of squares, {rank(3)} by silhouette and {rank(4, higher_is_better=False)} "
        "by map edges cut",
        f"purity of a 30-component mixture on the map: {purity(y, pieces):.3f} "
        "(the most any merging of its pieces into 10 clusters can reach)",
    ]
    table = markdown_table(
        ["mixture seed", "log-likelihood per point", "accuracy",
         "within-cluster SS (PCA-50) per point", "silhouette (PCA-50)",
         "map 10-NN edges cut"], rows)
    return f"## {title}\n\n" + table + "\n\n" + "".join(f"- {line}\n" for line in summary)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixture-seeds", type=int, default=16)
    parser.add_argument("--autoencoder-seeds", type=int, default=5)
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR)
    args = parser.parse_args(argv)
    X, y = load_mnist_idx(
        os.path.join(args.mnist_dir, "t10k-images-idx3-ubyte.gz"),
        os.path.join(args.mnist_dir, "t10k-labels-idx1-ubyte.gz"),
    )
    components = _principal_components(X, 0)

    def timed(make_map):
        start = time.perf_counter()
        embedding = make_map()
        return embedding, time.perf_counter() - start

    # Seed 0's joint map serves both its mixture study and the seed table.
    joint_maps = {seed: timed(lambda seed=seed: joint_map(X, components, seed))
                  for seed in range(max(1, args.autoencoder_seeds))}
    sections = [
        mixture_seed_study("Principal components alone (pretrain_iter=0)",
                           *timed(lambda: tsne_map(components, 0)), components, y,
                           args.mixture_seeds),
        mixture_seed_study("Principal components and autoencoder embedding (default), seed 0",
                           *joint_maps[0], components, y, args.mixture_seeds),
    ]

    rows = []
    for seed in range(args.autoencoder_seeds):
        embedding, map_seconds = joint_maps[seed]
        start = time.perf_counter()
        labels = _mixture_labels(embedding, 10, seed, n_init=_MAP_MIXTURE_INITS)
        rows.append([seed, f"{cluster_accuracy_score(y, labels):.3f}",
                     f"{map_seconds + time.perf_counter() - start:.1f}"])
        print(f"joint start, seed {seed}: accuracy {rows[-1][1]}", file=sys.stderr, flush=True)
    sections.append(
        "## The default start seed by seed\n\nEach seed trains its own autoencoder "
        f"and maps and clusters as a default fit does (the likeliest of "
        f"{_MAP_MIXTURE_INITS} mixture fits), with "
        "the seed passed straight to each step.\n\n"
        + markdown_table(["seed", "start accuracy", "seconds (autoencoder + t-SNE + mixture)"],
                         rows) + "\n"
    )
    text = (header_markdown("MNIST: the t-SNE + mixture start, with and without the autoencoder")
            + "\nLabels are used only to score.\n\n" + "\n".join(sections))
    print(text)
    print(f"\nwritten to {write_result('mnist_start.md', text)}")


if __name__ == "__main__":
    main()
