"""
Quick start
===========

Fit :class:`~catvae_sklearn.InfoCatVAE` to scikit-learn's digits, read the
cluster assignments and their probabilities, and check how well the clusters
match the digit classes (labels are used only to score, never to fit).
"""

# %%
# Digits are 8 x 8 images with pixel values 0 to 16. Scaled to [0, 1] they get
# a Bernoulli decoder (``likelihood="auto"`` picks it from the data's range).
import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import adjusted_rand_score

from catvae_sklearn import InfoCatVAE
from catvae_sklearn.metrics import cluster_accuracy_score
from catvae_sklearn.plotting import plot_loss_curve

X, y = load_digits(return_X_y=True)
X = X / 16.0

model = InfoCatVAE(n_clusters=10, random_state=0).fit(X)
print(f"likelihood: {model.likelihood_}, epochs: {model.n_iter_}")

# %%
# ``labels_`` are the training assignments; ``predict_proba`` gives q(c|x).
proba = model.predict_proba(X[:5])
print(np.round(proba, 2))
print("accuracy:", round(cluster_accuracy_score(y, model.labels_), 3))
print("ARI:", round(adjusted_rand_score(y, model.labels_), 3))

# %%
# ``score`` is the mean evidence lower bound per sample, in nats: a bound on
# log p(x), higher is better, and the default score of a grid search.
print("mean ELBO:", round(model.score(X), 2))
fig = plot_loss_curve(model)
