"""
Choosing K and δ with a pipeline and GridSearchCV
=================================================

:class:`~catvae_sklearn.InfoCatVAE` is an ordinary estimator, so it goes into
a :class:`~sklearn.pipeline.Pipeline` and a
:class:`~sklearn.model_selection.GridSearchCV`. Without labels, the default
score is the held-out evidence lower bound per sample (``score``). The grid
here is small and the epochs few so that the example runs in seconds.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from catvae_sklearn import InfoCatVAE

X, y = load_digits(return_X_y=True)

pipeline = make_pipeline(
    MinMaxScaler(clip=True),
    InfoCatVAE(hidden_layer_sizes=(128,), max_iter=5, init_params="kmeans", random_state=0),
)
grid = {"infocatvae__n_clusters": [6, 10, 14], "infocatvae__subspace_dim": [2, 4]}
search = GridSearchCV(pipeline, grid, cv=3).fit(X)
print("best:", search.best_params_)

# %%
# Mean held-out ELBO per sample for each (K, δ).
scores = search.cv_results_["mean_test_score"].reshape(3, 2)
fig, ax = plt.subplots(figsize=(4, 3))
image = ax.imshow(scores, cmap="viridis")
ax.set_xticks([0, 1], grid["infocatvae__subspace_dim"])
ax.set_yticks([0, 1, 2], grid["infocatvae__n_clusters"])
ax.set_xlabel("subspace_dim δ")
ax.set_ylabel("n_clusters K")
fig.colorbar(image, label="held-out ELBO (nats)")
fig.tight_layout()

# %%
# With labels, a grid search can instead maximise clustering accuracy through
# :data:`~catvae_sklearn.metrics.cluster_accuracy_scorer`:
# ``GridSearchCV(pipeline, grid, scoring=cluster_accuracy_scorer).fit(X, y)``.
