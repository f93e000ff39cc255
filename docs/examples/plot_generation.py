"""
Conditional generation and decoded cluster centres
==================================================

Each cluster c has its own prior p(z|c) = N(μ_c, I). Sampling z from it and
decoding gives new images of that cluster: one row per cluster, as in the
paper's grid of samples. Decoding the prior means μ_c themselves gives each
cluster's centre (``cluster_centers_``).
"""

# %%
from sklearn.datasets import load_digits

from catvae_sklearn import InfoCatVAE
from catvae_sklearn.plotting import plot_centroids, plot_samples

X, _ = load_digits(return_X_y=True)
model = InfoCatVAE(n_clusters=10, random_state=0).fit(X / 16.0)

fig = plot_samples(model, n_per_cluster=10, image_shape=(8, 8))

# %%
# ``sample`` returns the data and the cluster each sample came from.
X_new, clusters = model.sample(5, cluster=3)
print(X_new.shape, clusters)

# %%
fig = plot_centroids(model, image_shape=(8, 8))
