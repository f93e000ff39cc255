"""
Moving through the latent space
===============================

Two walks through the latent space of a fitted model, decoded at each step:

* **radial** (the paper's λ figure): from the origin outwards along each
  cluster's prior mean, past λ (``prior_scale``). Near the origin every
  cluster decodes to the same blurred average; the cluster's identity appears
  as the code moves into its own subspace.
* **interpolate**: a straight line from one cluster's prior mean to the
  next's, showing how one cluster's images turn into another's.
"""

# %%
from sklearn.datasets import load_digits

from catvae_sklearn import InfoCatVAE
from catvae_sklearn.plotting import plot_traversals

X, _ = load_digits(return_X_y=True)
model = InfoCatVAE(n_clusters=10, random_state=0).fit(X / 16.0)

fig = plot_traversals(model, n_steps=8, image_shape=(8, 8), mode="radial")

# %%
fig = plot_traversals(model, n_steps=8, image_shape=(8, 8), mode="interpolate")
