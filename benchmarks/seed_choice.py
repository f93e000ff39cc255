"""Can a label-free score tell which seed's fit is closest to the classes?

A default fit's partition varies from seed to seed, most on a few thousand
images, and a user who fits several seeds needs a way to keep one. For each
data set this fits InfoCatVAE with its defaults (only ``n_clusters`` set)
from seeds 0..N-1 and scores each fit, on its training rows, by

- the mean ELBO per row (``score``), the criterion a mixture's ``n_init``
  would use;
- the silhouette of its clusters in the latent codes
  (``catvae_sklearn.metrics.latent_silhouette_scorer``).

It reports each score's rank correlation (Spearman) with the accuracy over
the seeds, and the accuracy of the seed the score ranks first, beside the
median and best seed. Labels are used only for the accuracy.

    python benchmarks/seed_choice.py                      # mnist_2000 and mnist_unequal, 10 seeds
    python benchmarks/seed_choice.py --datasets digits --seeds 3 --no-save

Writes ``benchmarks/results/seed_choice.md`` with machine and versions.
"""

import argparse
import os
import sys

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_MNIST_DIR, markdown_table, publish  # noqa: E402
from accuracy import DATASETS, load  # noqa: E402

from catvae_sklearn import InfoCatVAE  # noqa: E402
from catvae_sklearn.metrics import cluster_accuracy_score, latent_silhouette_scorer  # noqa: E402

CRITERIA = {
    "mean ELBO (`score`)": lambda model, X: model.score(X),
    "latent silhouette": latent_silhouette_scorer,
}


def run(datasets, seeds, mnist_dir):
    rows = []
    for name in datasets:
        X, y, description = load(name, mnist_dir)
        accuracies, scores = [], {criterion: [] for criterion in CRITERIA}
        for seed in range(seeds):
            model = InfoCatVAE(len(np.unique(y)), random_state=seed).fit(X)
            accuracies.append(cluster_accuracy_score(y, model.labels_))
            for criterion, score in CRITERIA.items():
                scores[criterion].append(score(model, X))
            print(f"{name} seed={seed} accuracy={accuracies[-1]:.3f} "
                  + " ".join(f"{c}={s[-1]:.3f}" for c, s in scores.items()), flush=True)
        accuracies = np.asarray(accuracies)
        for criterion, values in scores.items():
            # Undefined when every seed scores alike or reaches the same accuracy.
            alike = np.ptp(values) == 0 or np.ptp(accuracies) == 0
            rho = "n/a" if alike else f"{spearmanr(values, accuracies).statistic:+.2f}"
            rows.append([name, criterion, rho,
                         f"{accuracies[int(np.argmax(values))]:.3f}",
                         f"{np.median(accuracies):.3f} / {accuracies.min():.3f} / {accuracies.max():.3f}",
                         ", ".join(f"{a:.3f}" for a in accuracies)])
        rows.append([f"*{description}*", "", "", "", "", ""])
    return markdown_table(["data", "score", "rank correlation with accuracy",
                           "accuracy of the top-scored seed", "accuracy: median / worst / best",
                           "accuracy per seed"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist_2000", "mnist_unequal"],
                        choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR)
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    table = run(args.datasets, args.seeds, args.mnist_dir)
    publish("Choosing among seeds: do label-free scores follow accuracy?",
            f"Seeds 0..{args.seeds - 1}, InfoCatVAE defaults given only the number of classes; "
            "each score on the training rows. A positive correlation would let the "
            "top-scored seed be kept; labels are used only for the accuracy.",
            table, "seed_choice.md", save=not args.no_save)


if __name__ == "__main__":
    main()
