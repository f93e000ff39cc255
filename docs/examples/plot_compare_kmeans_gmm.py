"""
Comparison with KMeans and GaussianMixture
==========================================

The same digits, clustered by :class:`~catvae_sklearn.InfoCatVAE` with its
defaults, by :class:`~sklearn.cluster.KMeans` and by
:class:`~sklearn.mixture.GaussianMixture`. The scores compare each partition
with the digit classes; ``benchmarks/accuracy.py`` runs the same comparison
over several seeds and data sets.
"""

# %%
from time import perf_counter

import matplotlib.pyplot as plt
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline

from catvae_sklearn import InfoCatVAE
from catvae_sklearn.metrics import cluster_accuracy_score

X, y = load_digits(return_X_y=True)
X = X / 16.0

models = {
    "InfoCatVAE": InfoCatVAE(n_clusters=10, random_state=0),
    "KMeans": KMeans(n_clusters=10, n_init=10, random_state=0),
    "GaussianMixture (diag)": GaussianMixture(10, covariance_type="diag", random_state=0),
    "PCA(30) + GaussianMixture": make_pipeline(
        PCA(30, random_state=0), GaussianMixture(10, random_state=0)
    ),
}
scores = {}
for name, model in models.items():
    start = perf_counter()
    labels = model.fit(X).predict(X)
    seconds = perf_counter() - start
    scores[name] = (
        cluster_accuracy_score(y, labels),
        normalized_mutual_info_score(y, labels),
        adjusted_rand_score(y, labels),
    )
    print(f"{name:28s} acc {scores[name][0]:.3f}  NMI {scores[name][1]:.3f}  "
          f"ARI {scores[name][2]:.3f}  ({seconds:.1f} s)")

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(scores), [s[0] for s in scores.values()])
ax.set_xlabel("clustering accuracy on digits")
ax.set_xlim(0, 1)
fig.tight_layout()
