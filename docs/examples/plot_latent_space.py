"""
The latent space in two dimensions
==================================

``transform`` maps each sample to its posterior mean code,
Σ_c q(c|x) m_c(x), in K·δ dimensions. Projected to 2-D (PCA here; t-SNE with
``method="tsne"``) and coloured by the predicted cluster, it shows how
separate the clusters are.
"""

# %%
from sklearn.datasets import load_digits

from catvae_sklearn import InfoCatVAE
from catvae_sklearn.plotting import plot_latent

X, _ = load_digits(return_X_y=True)
X = X / 16.0
model = InfoCatVAE(n_clusters=10, random_state=0).fit(X)
print("code dimension:", model.transform(X).shape[1])

fig = plot_latent(model, X, method="pca")
