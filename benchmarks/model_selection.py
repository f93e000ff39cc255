"""How often does a criterion pick the true number of clusters?

For synthetic data with a known K (several generators, one of them clusters
pushed through a random nonlinear map into 40 dimensions), each criterion
scores every candidate K and picks one:

- InfoCatVAE's held-out ELBO per sample (``score``, the default of
  ``GridSearchCV``), on a held-out third of the data;
- the silhouette of the held-out third's predicted clusters, measured in
  the model's latent space (``catvae_sklearn.metrics.latent_silhouette_scorer``);
- ``GaussianMixture.bic`` (full covariance) on the whole data, for reference.

    python benchmarks/model_selection.py              # 5 seeds per generator
    python benchmarks/model_selection.py --seeds 2 --no-save

Writes ``benchmarks/results/model_selection.md`` with machine and versions.
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np
from sklearn.datasets import make_blobs
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import header_markdown, markdown_table, write_result  # noqa: E402

from catvae_sklearn import InfoCatVAE  # noqa: E402
from catvae_sklearn.metrics import latent_silhouette_scorer  # noqa: E402

CANDIDATES = list(range(2, 9))
N_SAMPLES = 600


def generate(name, true_k, seed):
    rng = np.random.default_rng(seed)
    if name == "blobs (10-D, isotropic)":
        X, _ = make_blobs(N_SAMPLES, n_features=10, centers=true_k,
                          center_box=(-6, 6), random_state=seed)
    elif name == "anisotropic (10-D, unequal sizes)":
        sizes = rng.multinomial(N_SAMPLES - 20 * true_k, np.ones(true_k) / true_k) + 20
        parts = []
        for size in sizes:
            centre = rng.uniform(-8, 8, size=10)
            mixing = rng.normal(size=(10, 10)) * rng.uniform(0.2, 1.0, size=10)
            parts.append(centre + rng.normal(size=(size, 10)) @ mixing)
        X = np.vstack(parts)
    elif name == "nonlinear (3-D blobs -> random MLP -> 40-D)":
        Z, _ = make_blobs(N_SAMPLES, n_features=3, centers=true_k,
                          center_box=(-5, 5), random_state=seed)
        W1 = rng.normal(size=(3, 64)) / np.sqrt(3)
        W2 = rng.normal(size=(64, 40)) / np.sqrt(64)
        X = np.tanh(Z @ W1) @ W2 + 0.05 * rng.normal(size=(N_SAMPLES, 40))
    else:
        raise ValueError(name)
    return StandardScaler().fit_transform(X)


def choose(X, seed):
    X_train, X_test = train_test_split(X, test_size=1 / 3, random_state=seed)
    elbo, silhouette, input_silhouette, bic = {}, {}, {}, {}
    for k in CANDIDATES:
        model = InfoCatVAE(n_clusters=k, random_state=seed).fit(X_train)
        elbo[k] = model.score(X_test)
        silhouette[k] = latent_silhouette_scorer(model, X_test)
        labels = model.predict(X_test)
        input_silhouette[k] = (
            silhouette_score(X_test, labels) if len(np.unique(labels)) > 1 else -1.0
        )
        bic[k] = GaussianMixture(k, random_state=seed).fit(X).bic(X)
    return {
        "held-out ELBO (InfoCatVAE)": max(elbo, key=elbo.get),
        "latent silhouette (InfoCatVAE)": max(silhouette, key=silhouette.get),
        "input silhouette (InfoCatVAE)": max(input_silhouette, key=input_silhouette.get),
        "BIC (GaussianMixture, full)": min(bic, key=bic.get),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    generators = [
        "blobs (10-D, isotropic)",
        "anisotropic (10-D, unequal sizes)",
        "nonlinear (3-D blobs -> random MLP -> 40-D)",
    ]
    rows = []
    start = time.perf_counter()
    for name in generators:
        hits, picks = {}, {}
        for seed in range(args.seeds):
            true_k = (3, 5, 4, 6, 3)[seed % 5]
            chosen = choose(generate(name, true_k, seed), seed)
            for criterion, k in chosen.items():
                hits[criterion] = hits.get(criterion, 0) + (k == true_k)
                picks.setdefault(criterion, []).append(f"{k}/{true_k}")
            print(name, seed, true_k, chosen, flush=True)
        for criterion in hits:
            rows.append([name, criterion, f"{hits[criterion]} / {args.seeds}",
                         ", ".join(picks[criterion])])
    elapsed = time.perf_counter() - start
    table = markdown_table(
        ["generator", "criterion", "true K picked", "picked / true, per seed"], rows
    )
    text = (
        header_markdown("Choosing K: held-out ELBO, latent silhouette and BIC")
        + f"\n{N_SAMPLES} samples per data set, candidates K = {CANDIDATES[0]}..{CANDIDATES[-1]}, "
        f"InfoCatVAE defaults; {elapsed:.0f} s in all.\n\n" + table + "\n"
    )
    print(text)
    if not args.no_save:
        print("written to", write_result("model_selection.md", text))


if __name__ == "__main__":
    main()
