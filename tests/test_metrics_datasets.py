"""cluster_accuracy_score and the IDX / MNIST loader."""

import gzip
import os
import struct

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.model_selection import cross_val_score

from catvae_sklearn.datasets import load_mnist_idx, read_idx
from catvae_sklearn.metrics import cluster_accuracy_score, cluster_accuracy_scorer

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def test_accuracy_is_invariant_to_renaming_clusters():
    rng = np.random.RandomState(0)
    y = rng.randint(0, 5, size=200)
    permutation = rng.permutation(5)
    assert cluster_accuracy_score(y, permutation[y]) == 1.0


def test_accuracy_counts_the_best_matching():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [1, 1, 0, 0, 0, 2]
    # best: 1->0 (2 right), 0->1 (2 right), 2->2 (1 right) = 5/6
    assert cluster_accuracy_score(y_true, y_pred) == pytest.approx(5 / 6)


def test_accuracy_with_more_clusters_than_classes():
    assert cluster_accuracy_score([0, 0, 1, 1], [0, 1, 2, 3]) == 0.5


def test_accuracy_rejects_mismatched_lengths_and_empty():
    with pytest.raises(ValueError):
        cluster_accuracy_score([0, 1], [0])
    with pytest.raises(ValueError, match="at least one sample"):
        cluster_accuracy_score([], [])


def test_scorer_works_with_a_clusterer():
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (30, 2))]
    y = np.r_[np.zeros(30), np.ones(30)]
    scores = cross_val_score(
        KMeans(2, n_init=2, random_state=0), X, y, scoring=cluster_accuracy_scorer, cv=3
    )
    np.testing.assert_allclose(scores, 1.0)


def _write_idx(path, array, compress):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype.type], array.ndim)
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(payload)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, compress):
    images = np.random.RandomState(0).randint(0, 256, size=(5, 4, 3)).astype(np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    _write_idx(tmp_path / "img", images, compress)
    _write_idx(tmp_path / "lab", labels, compress)
    X, y = load_mnist_idx(tmp_path / "img", tmp_path / "lab")
    assert X.shape == (5, 12) and X.dtype == np.float32
    np.testing.assert_allclose(X, images.reshape(5, 12) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)
    raw = load_mnist_idx(tmp_path / "img", scale=False)
    np.testing.assert_array_equal(raw, images.reshape(5, 12))
    np.testing.assert_array_equal(read_idx(tmp_path / "img"), images)


def test_truncated_idx_file(tmp_path):
    images = np.zeros((5, 4, 4), dtype=np.uint8)
    _write_idx(tmp_path / "img", images, False)
    data = (tmp_path / "img").read_bytes()
    (tmp_path / "img").write_bytes(data[:-7])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist_idx(tmp_path / "img")


def test_not_an_idx_file(tmp_path):
    (tmp_path / "f").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "f")


def test_labels_must_match_images(tmp_path):
    _write_idx(tmp_path / "img", np.zeros((5, 2, 2), dtype=np.uint8), False)
    _write_idx(tmp_path / "lab", np.zeros(4, dtype=np.uint8), False)
    with pytest.raises(ValueError, match="do not match 5 images"):
        load_mnist_idx(tmp_path / "img", tmp_path / "lab")


@pytest.mark.skipif(
    not os.path.exists(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")),
    reason="MNIST test set not present in ../shared/data",
)
def test_mnist_test_set_loads():
    X, y = load_mnist_idx(
        os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"),
        os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz"),
    )
    assert X.shape == (10000, 784)
    assert 0.0 <= X.min() and X.max() <= 1.0
    np.testing.assert_array_equal(
        np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
