"""How training adapts to its device: where the data live, which ELBO
estimate is used, and the precision of the forward pass. The GPU side of
each choice is exercised in tests/test_cuda.py."""

import numpy as np
import pytest
import torch

from catvae_sklearn import InfoCatVAE
from catvae_sklearn import _device, _training
from catvae_sklearn._model import CategoricalVAE

from ._helpers import QUICK, digits, training_config

GiB = 2**30


@pytest.mark.parametrize(
    "n_bytes, free_bytes, on_device",
    [(1 * GiB, 10 * GiB, True), (5 * GiB, 10 * GiB, True), (6 * GiB, 10 * GiB, False)],
)
def test_data_stay_on_a_gpu_only_when_they_fit_in_half_its_free_memory(
    monkeypatch, n_bytes, free_bytes, on_device
):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free_bytes, 80 * GiB))
    gpu = torch.device("cuda")
    expected = gpu if on_device else torch.device("cpu")
    assert _device.data_device(n_bytes, gpu) == expected


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_cpu_and_mps_always_hold_the_training_data(device):
    assert _device.data_device(10**15, torch.device(device)) == torch.device(device)


def test_auto_decode_threshold_is_sparse_on_cpu_and_exact_on_accelerators():
    assert _device.decode_threshold("auto", torch.device("cpu")) == 0.01
    assert _device.decode_threshold("auto", torch.device("cuda")) == 0.0
    assert _device.decode_threshold("auto", torch.device("mps")) == 0.0
    assert _device.decode_threshold(0.2, torch.device("cuda")) == 0.2


def test_default_fit_on_cpu_is_the_fit_with_min_decode_proba_001():
    X, _ = digits(300)
    default = InfoCatVAE(n_clusters=4, device="cpu", **QUICK).fit(X)
    explicit = InfoCatVAE(n_clusters=4, min_decode_proba=0.01, device="cpu", **QUICK).fit(X)
    np.testing.assert_array_equal(default.labels_, explicit.labels_)
    assert default.loss_curve_ == explicit.loss_curve_


def test_cpu_training_runs_in_float32():
    with _device.mixed_precision(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_autoencoder_runs_in_bfloat16_only_where_the_cpu_multiplies_it(monkeypatch, native):
    monkeypatch.setattr(_device, "_cpu_multiplies_bfloat16", lambda: native)
    with _device.mixed_precision(torch.device("cpu"), on_cpu=True):
        assert torch.is_autocast_enabled("cpu") == native
    with _device.mixed_precision(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(
    "batch_size, n_features, large",
    [(256, 784, True), (156, 784, True), (56, 64, False), (93, 784, False)],
)
def test_cpu_training_uses_bfloat16_only_for_large_batches_where_the_cpu_multiplies_it(
    monkeypatch, native, batch_size, n_features, large
):
    monkeypatch.setattr(_device, "_cpu_multiplies_bfloat16", lambda: native)
    cpu_bfloat16 = _device.cpu_bfloat16_pays(torch.device("cpu"), batch_size, n_features)
    assert cpu_bfloat16 == (native and large)
    assert not _device.cpu_bfloat16_pays(torch.device("cuda"), batch_size, n_features)
    # Padding the sparse decoding's pairs is for bfloat16's kernels only.
    assert _device.pair_multiple(cpu_bfloat16, batch_size) == (batch_size // 2 if cpu_bfloat16 else 1)


def test_padding_the_pairs_leaves_the_elbo_and_its_gradients_unchanged():
    torch.manual_seed(0)
    module = CategoricalVAE(64, 5, 2, (32,), 3.0, "bernoulli")
    x = torch.as_tensor(digits(50)[0], dtype=torch.float32)
    noise = torch.randn(1, 5, 10)

    def elbo_and_gradients(multiple):
        module.zero_grad()
        elbo = module.elbo(x, noise=noise, min_decode_proba=0.05, pair_multiple=multiple)["elbo"]
        elbo.sum().backward()
        return elbo.detach(), [p.grad.clone() for p in module.parameters()]

    exact, exact_gradients = elbo_and_gradients(1)
    n_pairs = int(module.likely_clusters(module.logits(x).softmax(-1), 0.05).sum())
    assert n_pairs % 7 != 0  # so a multiple of 7 does pad
    padded, padded_gradients = elbo_and_gradients(7)
    torch.testing.assert_close(padded, exact)
    for got, expected in zip(padded_gradients, exact_gradients):
        torch.testing.assert_close(got, expected)


def test_a_fit_trained_under_cpu_bfloat16_is_finite_and_reproducible(monkeypatch):
    # Whatever this CPU has, take the bfloat16 path with padded pairs.
    monkeypatch.setattr(_device, "_cpu_multiplies_bfloat16", lambda: True)
    monkeypatch.setattr(_device, "_CPU_BFLOAT16_MIN_BATCH_ELEMENTS", 1)
    X, _ = digits(300)
    first = InfoCatVAE(n_clusters=4, device="cpu", **QUICK).fit(X)
    again = InfoCatVAE(n_clusters=4, device="cpu", **QUICK).fit(X)
    assert np.isfinite(first.loss_curve_).all()
    assert first.loss_curve_ == again.loss_curve_
    np.testing.assert_array_equal(first.labels_, again.labels_)


@pytest.mark.parametrize("min_decode_proba", [0.0, 0.05])
def test_elbo_under_bfloat16_autocast_is_finite_and_close_to_float32(min_decode_proba):
    # The GPU trains under bfloat16 autocast; the CPU's autocast rounds the
    # same way, so this checks the sparse path's dtypes and the size of the
    # rounding where no GPU is at hand.
    torch.manual_seed(0)
    module = CategoricalVAE(64, 5, 2, (64,), 3.0, "bernoulli")
    x = torch.as_tensor(digits(200)[0], dtype=torch.float32)
    noise = torch.randn(1, 5, 10)
    exact = module.elbo(x, noise=noise, min_decode_proba=min_decode_proba)["elbo"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = module.elbo(x, noise=noise, min_decode_proba=min_decode_proba)["elbo"]
    assert torch.isfinite(rounded).all()
    assert abs(rounded.float().mean() - exact.mean()) < 1e-2 * abs(exact.mean())


def test_training_step_returns_the_batch_loss_without_reading_it():
    torch.manual_seed(0)
    module = CategoricalVAE(64, 4, 2, (32,), 3.0, "bernoulli")
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    config = training_config(batch_size=50, info_weight=1.0, min_decode_proba=0.01)
    x = torch.as_tensor(digits(50)[0], dtype=torch.float32)
    before = [p.detach().clone() for p in module.parameters()]
    total = _training.training_step(
        module, optimizer, x, config, torch.zeros(50, dtype=torch.long), 1.0
    )
    assert isinstance(total, torch.Tensor) and total.shape == () and torch.isfinite(total)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


@pytest.mark.parametrize("batch_size, n_clusters, per_cluster", [(12, 4, 3), (512, 4, 32), (40, 64, 1)])
def test_information_term_draws_a_batch_of_prior_points_up_to_its_cap(
    monkeypatch, batch_size, n_clusters, per_cluster
):
    # As many draws as the batch has rows, up to INFO_DRAWS_PER_STEP (128 is
    # under 512), and at least one per cluster.
    torch.manual_seed(0)
    module = CategoricalVAE(64, n_clusters, 2, (32,), 3.0, "bernoulli")
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    draws = []
    original = CategoricalVAE.information_loss

    def counted(self, n_per_cluster):
        draws.append(n_per_cluster)
        return original(self, n_per_cluster)

    monkeypatch.setattr(CategoricalVAE, "information_loss", counted)
    x = torch.as_tensor(np.resize(digits(batch_size)[0], (batch_size, 64)), dtype=torch.float32)
    config = training_config(batch_size=batch_size, info_weight=1.0)
    _training.training_step(module, optimizer, x, config)
    assert _training.INFO_DRAWS_PER_STEP == 128
    assert draws == [per_cluster]
