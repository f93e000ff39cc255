"""
MNIST
=====

The MNIST test set (10,000 handwritten digits, 28 x 28) read from IDX files
with :func:`~catvae_sklearn.datasets.load_mnist_idx`. Point
``CATVAE_MNIST_DIR`` at a folder holding ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz``; otherwise the example looks next to this
repository (``../shared/data``) and, failing that, falls back to the bundled
8 x 8 digits. Nothing is downloaded.

To keep the documentation build quick, the example fits the first 2,000
images; the benchmarks page has the accuracy and fit time of default fits
on all 10,000.
"""

# %%
import os
from pathlib import Path

from sklearn.datasets import load_digits

from catvae_sklearn import InfoCatVAE
from catvae_sklearn.datasets import load_mnist_idx
from catvae_sklearn.metrics import cluster_accuracy_score
from catvae_sklearn.plotting import plot_samples


def find_mnist():
    candidates = [os.environ.get("CATVAE_MNIST_DIR")]
    here = Path.cwd().resolve()
    candidates += [str(parent / "shared" / "data") for parent in here.parents]
    for folder in filter(None, candidates):
        images = Path(folder) / "t10k-images-idx3-ubyte.gz"
        labels = Path(folder) / "t10k-labels-idx1-ubyte.gz"
        if images.exists() and labels.exists():
            return images, labels
    return None


paths = find_mnist()
if paths is not None:
    X, y = load_mnist_idx(*paths)
    X, y, image_shape = X[:2000], y[:2000], (28, 28)
else:
    X, y = load_digits(return_X_y=True)
    X, image_shape = X / 16.0, (8, 8)
print("data:", "MNIST test set" if paths else "digits (MNIST not found)", X.shape)

# %%
model = InfoCatVAE(n_clusters=10, random_state=0).fit(X)
print("accuracy:", round(cluster_accuracy_score(y, model.labels_), 3))

fig = plot_samples(model, n_per_cluster=10, image_shape=image_shape)
