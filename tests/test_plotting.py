"""catvae_sklearn.plotting returns figures and checks its arguments."""

import pytest

from catvae_sklearn import InfoCatVAE

from ._helpers import QUICK, blobs, digits

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from catvae_sklearn import plotting  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    X, y = digits(300)
    return InfoCatVAE(n_clusters=4, early_stopping=True, **QUICK).fit(X), X, y


def test_image_figures(fitted):
    from matplotlib.figure import Figure

    model, X, _ = fitted
    for fig in (
        plotting.plot_samples(model, n_per_cluster=5, image_shape=(8, 8)),
        plotting.plot_traversals(model, n_steps=4, image_shape=(8, 8)),
        plotting.plot_traversals(model, n_steps=4, image_shape=(8, 8), mode="interpolate"),
        plotting.plot_centroids(model, image_shape=(8, 8)),
    ):
        assert isinstance(fig, Figure)
        assert len(fig.axes) >= 4
    fig = plotting.plot_samples(model, n_per_cluster=5, image_shape=(8, 8))
    assert len(fig.axes) == 4 * 5


def test_latent_and_loss_curve(fitted):
    model, X, y = fitted
    fig = plotting.plot_latent(model, X)
    assert len(fig.axes[0].collections[0].get_offsets()) == X.shape[0]
    fig = plotting.plot_latent(model, X, y=y)
    assert fig.axes[0].get_legend().get_title().get_text() == "label"
    fig = plotting.plot_loss_curve(model)
    assert len(fig.axes[0].lines) == 2  # training and validation


def test_tabular_profiles():
    X, _ = blobs(100)
    model = InfoCatVAE(n_clusters=3, **QUICK).fit(X)
    assert len(plotting.plot_centroids(model).axes) == 3


def test_bad_arguments(fitted):
    model, X, _ = fitted
    with pytest.raises(ValueError, match="image_shape"):
        plotting.plot_samples(model, image_shape=(5, 5))
    with pytest.raises(ValueError, match="mode"):
        plotting.plot_traversals(model, mode="spiral")
    with pytest.raises(ValueError, match="method"):
        plotting.plot_latent(model, X, method="umap")
