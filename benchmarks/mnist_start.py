"""MNIST and digits: the t-SNE + mixture start, with and without the autoencoder.

The default start for wide data is a full-covariance Gaussian mixture on a
2-D t-SNE map, and training keeps that partition. This script builds the
map the way the library does, once from the first 50 principal components
alone (``pretrain_iter=0``) and once from those joined by the embedding of
the start's autoencoder (the default), and fits the mixture on each with
many seeds. For each fit it reports the log-likelihood (what ``n_init``
picks by), the share of the map's nearest-neighbour edges its clusters cut,
the accuracy and two label-free criteria measured on the data, plus the
purity of 30 components: the best accuracy any merging of those pieces
into 10 clusters could reach. The joint map studied is that of
``--study-seed``: 4, whose likeliest mixture fit splits the 1s and merges
5 with 8, the failure the start's choice among fits is there to avoid.
Last, the joint start as the library runs it for several seeds of MNIST
and of digits (passed directly, and as ``accuracy.py``'s fits draw them),
each with its own autoencoder, with the accuracy of the fit the start keeps
next to those that other log-likelihood tolerances would keep. Labels are
used only to score. Writes ``results/mnist_start.md``.

    python benchmarks/mnist_start.py --mixture-seeds 16 --autoencoder-seeds 5 --digits-seeds 8
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_MNIST_DIR, header_markdown, markdown_table, write_result  # noqa: E402

from catvae_sklearn import InfoCatVAE  # noqa: E402
from catvae_sklearn._estimator import training_seed  # noqa: E402
from catvae_sklearn._training import (  # noqa: E402
    TrainingConfig,
    _MAP_LOG_LIKELIHOOD_TOLERANCE,
    _MAP_MIXTURE_INITS,
    _principal_components,
    chosen_map_fit,
    learned_embedding,
    map_mixture_fits,
    map_neighbour_edges,
    share_of_edges_cut,
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
    edges = map_neighbour_edges(embedding)
    rows, fits = [], []
    for seed in range(n_seeds):
        mixture = GaussianMixture(10, random_state=seed).fit(embedding)
        labels = mixture.predict(embedding)
        fit = (
            mixture.score(embedding),
            cluster_accuracy_score(y, labels),
            within_cluster_sum_of_squares(components, labels) / len(y),
            silhouette_score(components, labels, sample_size=3000, random_state=0),
            share_of_edges_cut(labels, edges),
        )
        fits.append(fit)
        rows.append([seed, f"{fit[0]:.4f}", f"{fit[1]:.3f}", f"{fit[2]:.2f}", f"{fit[3]:.4f}",
                     f"{100 * fit[4]:.2f}%"])
        print(f"{title}, mixture seed {seed}: log-likelihood {fit[0]:.4f} accuracy {fit[1]:.3f}",
              file=sys.stderr, flush=True)
    fits = np.array(fits)
    best = fits[fits[:, 0].argmax()]
    least_cut = fits[np.lexsort((-fits[:, 0], fits[:, 4]))[0]]
    kept = fits[chosen_map_fit([(fit[0], fit[4], i) for i, fit in enumerate(fits)])[2]]
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
        f"the start's rule (fewest edges cut among fits within "
        f"{_MAP_LOG_LIKELIHOOD_TOLERANCE} nats per point of the likeliest): accuracy {kept[1]:.3f}",
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


# Log-likelihood tolerances compared in the seed tables, besides the default.
_OTHER_TOLERANCES = (0.0, 0.005, np.inf)


def seed_table(name, y, maps):
    """A markdown section: the default start for several seeds, the fit it
    keeps against the fits other tolerances would keep."""
    tolerances = (_MAP_LOG_LIKELIHOOD_TOLERANCE,) + _OTHER_TOLERANCES
    rows = []
    for label, (seed, embedding, map_seconds) in maps.items():
        start = time.perf_counter()
        fits = map_mixture_fits(embedding, 10, seed)
        indexed = [(fit[0], fit[1], i) for i, fit in enumerate(fits)]
        kept = [chosen_map_fit(indexed, tolerance)[2] for tolerance in tolerances]
        seconds = map_seconds + time.perf_counter() - start
        accuracies = [cluster_accuracy_score(y, labels) for _, _, labels in fits]
        rows.append([label] + [f"{accuracies[i]:.3f}" for i in kept]
                    + [f"{min(accuracies):.3f} to {max(accuracies):.3f}", f"{seconds:.1f}"])
        print(f"{name} start, {label}: kept {rows[-1][1:-2]}", file=sys.stderr, flush=True)
    return (
        f"## The default start seed by seed: {name}\n\nEach seed trains its own autoencoder, "
        f"maps and fits the mixture {_MAP_MIXTURE_INITS} times as a default fit does. "
        "The start keeps the fit that cuts fewest map edges among those within "
        f"{_MAP_LOG_LIKELIHOOD_TOLERANCE} nats per point of the likeliest; the next columns "
        "show the fit other tolerances would keep (0: the likeliest; infinite: fewest "
        "edges cut, whatever the likelihood). Rows `random_state=s` use the seed a "
        "default fit with that `random_state` draws, as `accuracy.py` does; rows "
        "`seed s` pass s straight to each step.\n\n"
        + markdown_table(["seed", f"kept fit's accuracy ({_MAP_LOG_LIKELIHOOD_TOLERANCE})",
                          "tolerance 0 (likeliest)", "tolerance 0.005",
                          "no tolerance limit", "accuracy of the fits",
                          "seconds (autoencoder + t-SNE + mixtures)"], rows) + "\n"
    )


def drawn_seed(random_state):
    """The seed a default fit with ``random_state`` passes to its start."""
    return training_seed(check_random_state(random_state))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixture-seeds", type=int, default=16)
    parser.add_argument("--autoencoder-seeds", type=int, default=5)
    parser.add_argument("--digits-seeds", type=int, default=8)
    parser.add_argument("--study-seed", type=int, default=4)
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

    # The studied joint map also serves the seed table.
    joint_maps = {seed: timed(lambda seed=seed: joint_map(X, components, seed))
                  for seed in sorted(set(range(args.autoencoder_seeds)) | {args.study_seed})}
    sections = [
        mixture_seed_study("Principal components alone (pretrain_iter=0)",
                           *timed(lambda: tsne_map(components, 0)), components, y,
                           args.mixture_seeds),
        mixture_seed_study(
            f"Principal components and autoencoder embedding (default), seed {args.study_seed}",
            *joint_maps[args.study_seed], components, y, args.mixture_seeds),
    ]

    mnist_maps = {f"seed {seed}": (seed, *joint_maps[seed])
                  for seed in range(args.autoencoder_seeds)}
    for random_state in range(args.autoencoder_seeds):
        seed = drawn_seed(random_state)
        mnist_maps[f"random_state={random_state}"] = (
            seed, *timed(lambda: joint_map(X, components, seed)))
    sections.append(seed_table("MNIST test set", y, mnist_maps))
    digits = load_digits()
    X_digits = (digits.data / 16.0).astype(np.float32)
    digits_maps = {}
    for label, seed in [(f"seed {s}", s) for s in range(args.digits_seeds)] + [
            (f"random_state={s}", drawn_seed(s)) for s in range(args.autoencoder_seeds)]:
        digits_maps[label] = (seed, *timed(lambda: joint_map(
            X_digits, _principal_components(X_digits, seed), seed)))
    sections.append(seed_table("digits", digits.target, digits_maps))
    text = (header_markdown(
        "MNIST and digits: the t-SNE + mixture start, with and without the autoencoder")
            + "\nLabels are used only to score.\n\n" + "\n".join(sections))
    print(text)
    print(f"\nwritten to {write_result('mnist_start.md', text)}")


if __name__ == "__main__":
    main()
