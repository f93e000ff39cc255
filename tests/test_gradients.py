"""The hand-worked gradient of the training loss that CPU training uses,
against autograd's gradient of the loss that GPU training builds from the
model's ``elbo`` and ``information_loss``."""

import itertools

import pytest
import torch

from catvae_sklearn import _training
from catvae_sklearn._gradients import _bernoulli_log_likelihood, loss_and_gradients
from catvae_sklearn._model import CategoricalVAE

from ._helpers import training_config

N_ROWS, N_FEATURES, K = 9, 12, 4
# (info_weight, balance_weight, guide_weight): each term alone, all, and none.
LOSS_TERMS = [(0.0, 0.0, 0.0), (3.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 2.0), (3.0, 1.0, 2.0)]


def _module_and_data(likelihood, hidden, dtype=torch.float32, n_rows=N_ROWS, n_clusters=K):
    torch.manual_seed(0)
    module = CategoricalVAE(N_FEATURES, n_clusters, 2, hidden, 3.0, likelihood)
    with torch.no_grad():  # q(c|x) far enough from uniform that clusters get skipped
        module.cluster_logits.weight.mul_(5.0)
    if likelihood == "bernoulli":
        x = torch.rand(n_rows, N_FEATURES)
    else:
        x = torch.randn(n_rows, N_FEATURES) * 3.0 + 1.0
        module.set_data_scale(x.mean(0), x.std(0) if n_rows > 1 else torch.ones(N_FEATURES))
        with torch.no_grad():
            module.decoder_log_scale.uniform_(-0.5, 0.5)
    return module.to(dtype), x.to(dtype), torch.randint(0, n_clusters, (n_rows,))


def _assert_hand_gradient_matches_autograd(module, x, labels, min_decode_proba):
    # Callers pass float64 modules, so that rounding cannot hide a wrong term.
    for info_weight, balance_weight, guide_weight in LOSS_TERMS:
        config = training_config(
            batch_size=3 * module.n_clusters,  # 3 prior draws per cluster
            info_weight=info_weight, balance_weight=balance_weight,
            min_decode_proba=min_decode_proba,
        )
        torch.manual_seed(1)
        loss, negative_elbo = _training._autograd_loss(module, x, config, labels, guide_weight)
        params = list(module.parameters())
        expected = torch.autograd.grad(loss, params)

        torch.manual_seed(1)  # the same noise draws, in the same order
        total = _training._hand_gradients(module, x, config, labels, guide_weight)
        torch.testing.assert_close(total, negative_elbo.detach().sum())
        for param, grad in zip(params, expected):
            assert param.grad is not None
            torch.testing.assert_close(param.grad, grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "likelihood, hidden, min_decode_proba",
    list(itertools.product(["bernoulli", "gaussian"], [(), (16,), (16, 8)], [0.0, 0.2])),
)
def test_hand_gradient_matches_autograd(likelihood, hidden, min_decode_proba):
    module, x, labels = _module_and_data(likelihood, hidden, dtype=torch.float64)
    _assert_hand_gradient_matches_autograd(module, x, labels, min_decode_proba)


@pytest.mark.parametrize("n_rows, n_clusters", [(1, 4), (5, 1)])
@pytest.mark.parametrize("min_decode_proba", [0.0, 0.2])
def test_hand_gradient_matches_autograd_for_one_row_or_one_cluster(
    n_rows, n_clusters, min_decode_proba
):
    module, x, labels = _module_and_data(
        "gaussian", (16,), torch.float64, n_rows=n_rows, n_clusters=n_clusters
    )
    _assert_hand_gradient_matches_autograd(module, x, labels, min_decode_proba)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("hidden", [(), (16,), (16, 8)])
def test_sparse_decoding_in_the_comparison_skips_some_clusters_and_keeps_several(
    likelihood, hidden
):
    # Otherwise the min_decode_proba=0.2 cases above would repeat the exact
    # ones, or leave no row with a worst computed fit to price skipped pairs.
    module, x, _ = _module_and_data(likelihood, hidden)
    with torch.no_grad():
        resp = module.logits(x).softmax(-1)
    per_row = module.likely_clusters(resp, 0.2).sum(1)
    assert per_row.min() < K
    assert per_row.max() > 1


def test_hand_gradient_keeps_clamped_log_variances_still():
    module, x, _ = _module_and_data("gaussian", (16,))
    with torch.no_grad():  # every log-variance below the clamp
        module.head_output.bias[module.latent_dim :] = -100.0
        module.decoder_log_scale.fill_(-100.0)
    loss_and_gradients(
        module, x, min_decode_proba=0.0, info_weight=0.0, info_per_cluster=1,
        balance_weight=0.0,
    )
    assert torch.all(module.head_output.bias.grad[module.latent_dim :] == 0)
    assert torch.all(module.decoder_log_scale.grad == 0)
    assert module.head_output.bias.grad[: module.latent_dim].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_log_likelihood_from_the_sigmoid_matches_the_model_at_extreme_logits(dtype):
    # Where sigmoid rounds to 0 or 1, log(sigmoid) or log(1 - sigmoid) would
    # be -inf; the model's binary cross-entropy stays finite there.
    logits = torch.tensor(
        [[-200.0, -60.0, -20.0, -1e-3, 0.0, 1e-3, 20.0, 60.0, 200.0]], dtype=dtype
    )
    x = torch.tensor([[0.0, 1.0, 0.3, 1.0, 0.5, 0.0, 0.7, 0.0, 1.0]], dtype=dtype)
    x = torch.cat([x, 1.0 - x])
    logits = logits.expand_as(x)
    module = CategoricalVAE(x.shape[1], 2, 2, (), 3.0, "bernoulli").to(dtype)
    expected = module.log_likelihood(x, logits)
    actual = _bernoulli_log_likelihood(x, logits, torch.sigmoid(logits))
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_cpu_training_step_updates_weights_as_the_autograd_step_does(likelihood):
    config = training_config(batch_size=N_ROWS, min_decode_proba=0.2)
    steps = {}
    for step in (_training.training_step, _training._autograd_training_step):
        module, x, labels = _module_and_data(likelihood, (16,))
        optimizer = _training.adam(module.parameters(), 1e-2)
        torch.manual_seed(2)
        totals = [step(module, optimizer, x, config, labels, 0.5) for _ in range(3)]
        steps[step] = totals, [p.detach().clone() for p in module.parameters()]
    (hand_totals, hand_params), (auto_totals, auto_params) = steps.values()
    torch.testing.assert_close(torch.stack(hand_totals), torch.stack(auto_totals))
    for hand, auto in zip(hand_params, auto_params):
        torch.testing.assert_close(hand, auto, rtol=1e-4, atol=1e-5)


def test_cpu_training_step_leaves_no_gradient_for_autograd_to_trip_on():
    # The hand-worked gradients are inference tensors, which autograd cannot
    # add to; a backward pass on the same module after a CPU step (a warm
    # start that trains with autograd, say) must still work.
    config = training_config(batch_size=N_ROWS, min_decode_proba=0.2)
    module, x, labels = _module_and_data("bernoulli", (16,))
    optimizer = _training.adam(module.parameters(), 1e-2)
    _training.training_step(module, optimizer, x, config, labels, 0.5)
    assert all(p.grad is None for p in module.parameters())

    loss, _ = _training._autograd_loss(module, x, config, labels, 0.5)
    loss.backward()  # adds into whatever .grad holds, without zero_grad
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
