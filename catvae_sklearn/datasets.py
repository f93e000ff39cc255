"""Loaders for data sets the benchmarks and examples use. Nothing downloads."""

import gzip
import os

import numpy as np

__all__ = ["load_mnist_idx", "read_idx"]

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open(path):
    path = os.fspath(path)
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_idx(path):
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    array : ndarray
        With the shape and dtype the file declares.
    """
    with _open(path) as handle:
        try:
            header = handle.read(4)
            if len(header) != 4 or header[0] != 0 or header[1] != 0:
                raise ValueError("bad magic number")
            dtype = _IDX_DTYPES.get(header[2])
            if dtype is None:
                raise ValueError(f"unknown element type 0x{header[2]:02x}")
            n_dims = header[3]
            shape = tuple(
                int.from_bytes(handle.read(4), "big") for _ in range(n_dims)
            )
            data = np.frombuffer(handle.read(), dtype=dtype)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ValueError(f"{os.fspath(path)!r} could not be read: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)!r} is not an IDX file: {exc}") from None
    expected = int(np.prod(shape))
    if data.size != expected:
        raise ValueError(
            f"{os.fspath(path)!r} declares shape {shape} ({expected} values) but "
            f"holds {data.size}: the file is truncated or corrupted."
        )
    return data.reshape(shape).astype(np.dtype(dtype).newbyteorder("="), copy=False)


def load_mnist_idx(images_path, labels_path=None, *, scale=True):
    """Load MNIST-format images (and labels) from IDX files.

    Point it at your own copy, e.g. the test set
    ``t10k-images-idx3-ubyte.gz`` / ``t10k-labels-idx1-ubyte.gz``.

    Parameters
    ----------
    images_path : str or path-like
        IDX file of images, shape (n, rows, cols).
    labels_path : str or path-like, default=None
        IDX file of labels, shape (n,).
    scale : bool, default=True
        Divide pixels by 255 to get float32 values in [0, 1], as the
        Bernoulli likelihood expects. ``False`` keeps the raw uint8 values.

    Returns
    -------
    X : ndarray of shape (n, rows * cols)
    y : ndarray of shape (n,)
        Only when ``labels_path`` is given.

    Examples
    --------
    >>> from catvae_sklearn.datasets import load_mnist_idx
    >>> X, y = load_mnist_idx("t10k-images-idx3-ubyte.gz",
    ...                       "t10k-labels-idx1-ubyte.gz")  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (10000, 784)
    """
    images = read_idx(images_path)
    if images.ndim != 3:
        raise ValueError(
            f"{os.fspath(images_path)!r} holds an array of shape {images.shape}; "
            "images need three dimensions (n, rows, cols)."
        )
    X = images.reshape(images.shape[0], -1)
    X = (X.astype(np.float32) / 255.0) if scale else X
    if labels_path is None:
        return X
    y = read_idx(labels_path)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(
            f"labels of shape {y.shape} do not match {X.shape[0]} images."
        )
    return X, y.astype(np.int64)
