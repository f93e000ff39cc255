"""Conditional generation: do ``sample(n, cluster=c)`` draws look like cluster c's class?

The paper's claim for the information term. A small MLP classifier, trained
on the data's labels, judges the samples; the labels serve only to judge
and to match each cluster to the class it holds most of (Hungarian
matching of ``labels_`` to the classes, as in the accuracy score). Reported
per data set and seed, for the defaults and for ``info_weight=0``: the
share of samples the judge puts in their cluster's class, and the worst
cluster's share.

Writes ``benchmarks/results/generation_<datasets>.md``.

    python benchmarks/generation.py                       # digits and MNIST, 1 seed
    python benchmarks/generation.py --datasets digits --seeds 3
"""

import argparse
import os
import sys

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics.cluster import contingency_matrix
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_MNIST_DIR, markdown_table, publish  # noqa: E402
from accuracy import load  # noqa: E402

from catvae_sklearn import InfoCatVAE  # noqa: E402
from catvae_sklearn.metrics import cluster_accuracy_score  # noqa: E402

VARIANTS = {"InfoCatVAE (defaults)": {}, "CatVAE (info_weight=0)": {"info_weight": 0.0}}


def judge(X, y, seed):
    """The classifier that labels the samples, trained on every labelled row."""
    return MLPClassifier((256,), max_iter=300, early_stopping=True,
                         random_state=seed).fit(X, y)


def class_of_cluster(y, labels, n_clusters):
    """The class matched to each cluster (-1 where none is)."""
    counts = contingency_matrix(y, labels)
    classes, clusters = np.unique(y), np.unique(labels)
    matched = np.full(n_clusters, -1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    matched[clusters[cols]] = classes[rows]
    return matched


def generation_shares(model, classifier, y, per_cluster):
    """Share of each cluster's samples the classifier puts in its class."""
    matched = class_of_cluster(y, model.labels_, model.n_clusters)
    shares = []
    for c in range(model.n_clusters):
        samples, _ = model.sample(per_cluster, cluster=c)
        shares.append(float(np.mean(classifier.predict(samples) == matched[c])))
    return np.array(shares)


def run(datasets, seeds, mnist_dir, per_cluster):
    rows = []
    for name in datasets:
        X, y, description = load(name, mnist_dir)
        K = len(np.unique(y))
        for seed in range(seeds):
            classifier = judge(X, y, seed)
            for variant, options in VARIANTS.items():
                model = InfoCatVAE(K, random_state=seed, **options).fit(X)
                shares = generation_shares(model, classifier, y, per_cluster)
                accuracy = cluster_accuracy_score(y, model.labels_)
                rows.append([name, seed, variant, f"{shares.mean():.3f}", f"{shares.min():.3f}",
                             f"{accuracy:.3f}"])
                print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
        rows.append([f"*{description}*", "", "", "", "", ""])
    header = ["data", "seed", "model", "samples in their cluster's class", "worst cluster",
              "clustering accuracy"]
    return markdown_table(header, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist"],
                        choices=["digits", "mnist", "mnist_2000", "mnist_5000"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--per-cluster", type=int, default=500, help="samples drawn per cluster")
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR)
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    table = run(args.datasets, args.seeds, args.mnist_dir, args.per_cluster)
    publish("Conditional generation: samples judged by a classifier",
            f"{args.per_cluster} samples per cluster (decoder means), labelled by an MLP "
            "(256 hidden units) trained on the data's labels; each cluster is matched to a class "
            "by the Hungarian matching of `labels_` to the classes.",
            table, "generation_" + "_".join(args.datasets) + ".md", save=not args.no_save)


if __name__ == "__main__":
    main()
