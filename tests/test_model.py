"""The network and its objective, checked against direct computations."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from catvae_sklearn import InfoCatVAE
from catvae_sklearn._model import CategoricalVAE

from ._helpers import QUICK, blobs, digits


def _module(likelihood="bernoulli", n_features=12, K=4, delta=3, seed=0):
    torch.manual_seed(seed)
    return CategoricalVAE(n_features, K, delta, (20, 10), 2.5, likelihood)


def test_prior_means_are_lambda_on_each_clusters_block():
    module = _module(K=3, delta=2)
    expected = torch.tensor(
        [
            [2.5, 2.5, 0, 0, 0, 0],
            [0, 0, 2.5, 2.5, 0, 0],
            [0, 0, 0, 0, 2.5, 2.5],
        ]
    )
    torch.testing.assert_close(module.prior_means, expected)


def test_trunk_starts_from_given_weights_only_when_their_shapes_match():
    module = _module(K=3, delta=2)
    first = module.trunk[0]
    weight = np.random.default_rng(0).normal(size=tuple(first.weight.shape)).astype(np.float32)
    bias = np.ones(first.bias.shape, dtype=np.float32)
    assert not module.start_trunk_from(weight[:, :-1], bias)
    assert not np.allclose(first.weight.detach().numpy()[:, :-1], weight[:, :-1])
    assert module.start_trunk_from(weight, bias)
    np.testing.assert_array_equal(first.weight.detach().numpy(), weight)
    np.testing.assert_array_equal(first.bias.detach().numpy(), bias)


def test_batched_heads_equal_a_linear_map_of_features_and_onehot():
    module = _module(K=4, delta=3)
    x = torch.rand(7, 12)
    _, mean, logvar = module.encode(x)
    h = module.features(x)
    # The reference formulation: one head per cluster reading [h, onehot(c)].
    weight = torch.cat([module.head_features.weight, module.cluster_codes.T], dim=1)
    for c in range(4):
        onehot = F.one_hot(torch.full((7,), c), 4).float()
        g = F.relu(F.linear(torch.cat([h, onehot], 1), weight, module.head_features.bias))
        m, lv = module.head_output(g).chunk(2, dim=-1)
        torch.testing.assert_close(mean[:, c], m)
        torch.testing.assert_close(logvar[:, c], lv.clamp(-12, 8))


def test_elbo_matches_its_definition():
    module = _module("gaussian")
    x = torch.randn(5, 12)
    noise = torch.randn(1, 4, module.latent_dim)
    out = module.elbo(x, noise=noise)
    logits, mean, logvar = module.encode(x)
    q = logits.softmax(-1)
    z = mean + torch.exp(0.5 * logvar) * noise[0]
    scale = torch.exp(module.decoder_log_scale)
    recon = torch.distributions.Normal(module.decode(z), scale).log_prob(x[:, None]).sum(-1)
    q_z = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    p_z = torch.distributions.Normal(module.prior_means, 1.0)
    kl_z = torch.distributions.kl_divergence(q_z, p_z).sum(-1)
    kl_c = (q * (q.log() - math.log(1 / 4))).sum(-1)
    expected = (q * (recon - kl_z)).sum(-1) - kl_c
    torch.testing.assert_close(out["elbo"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_likely_cluster_elbo_equals_the_exact_one_when_nothing_is_skipped(likelihood):
    module = _module(likelihood)
    x = torch.rand(9, 12)
    noise = torch.randn(2, 4, module.latent_dim)
    exact = module.elbo(x, noise=noise)
    sparse = module.elbo(x, noise=noise, min_decode_proba=1e-12)
    for key in exact:
        torch.testing.assert_close(sparse[key], exact[key])
    params = list(module.parameters())
    exact_grad = torch.autograd.grad(exact["elbo"].sum(), params, allow_unused=True)
    sparse_grad = torch.autograd.grad(sparse["elbo"].sum(), params, allow_unused=True)
    for a, b in zip(exact_grad, sparse_grad):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a)


def test_likely_cluster_elbo_decodes_only_likely_pairs_and_prices_the_rest_at_worst():
    module = _module("bernoulli", K=4)
    x = torch.rand(50, 12)
    with torch.no_grad():  # a peaked posterior: row i favours cluster i % 4
        module.cluster_logits.weight.zero_()
        module.cluster_logits.bias.zero_()
    logits = torch.full((50, 4), -20.0)
    logits[torch.arange(50), torch.arange(50) % 4] = 0.0
    logits[torch.arange(10), (torch.arange(10) + 1) % 4] = -1.0  # ten rows with a runner-up
    module.cluster_logits.forward = lambda h: logits
    decoded_rows = []
    decode = module.decode
    module.decode = lambda z: (decoded_rows.append(z.shape[-2]), decode(z))[1]
    noise = torch.randn(1, 4, module.latent_dim)

    sparse = module.elbo(x, noise=noise, min_decode_proba=0.01)
    assert decoded_rows == [60]  # 50 most likely pairs + 10 runners-up, not 200

    exact = module.elbo(x, noise=noise)
    resp = exact["resp"]
    skipped_mass = resp.sum(1) - resp.topk(2, dim=1).values.sum(1)
    # Each skipped pair counts at its row's worst computed fit, so a row's
    # estimate moves by at most the skipped mass times the row's spread.
    gap = (sparse["elbo"] - exact["elbo"]).abs()
    assert torch.all(gap <= skipped_mass * 1e4 + 1e-4)
    assert gap.max() < 1e-3
    h = module.features(x)
    reconstruction, kl_z = module._likely_cluster_terms(x, h, resp, noise, 0.01)
    computed = resp >= 0.01
    assert computed.sum() == 60
    for row in range(50):
        skipped = ~computed[row]
        assert torch.all(reconstruction[row, skipped] == reconstruction[row, ~skipped].min())
        assert torch.all(kl_z[row, skipped] == kl_z[row, ~skipped].max())
    params = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(sparse["elbo"].sum(), params, allow_unused=True)
    assert all(g is None or torch.all(torch.isfinite(g)) for g in grads)


def test_bernoulli_elbo_is_never_positive():
    X, _ = digits(200)
    model = InfoCatVAE(n_clusters=5, **QUICK).fit(X)
    assert np.all(model.score_samples(X) <= 0)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_elbo_does_not_exceed_importance_sampled_log_likelihood(likelihood):
    if likelihood == "bernoulli":
        X, _ = digits(150)
    else:
        X, _ = blobs(150)
    model = InfoCatVAE(n_clusters=4, likelihood=likelihood, **QUICK).fit(X)
    module = model.module_
    x = torch.as_tensor(X, dtype=torch.float32, device=module.device)
    torch.manual_seed(0)
    with torch.no_grad():
        log_px = module.importance_sampled_log_likelihood(x, n_samples=2000).cpu().numpy()
        # score_samples takes one draw per row, too noisy to hold row by row
        # where the bound is tight; 500 draws shared by the rows are not.
        noise = torch.randn(500, 4, module.latent_dim, device=module.device)
        elbo_per_row = module.elbo(x, noise=noise)["elbo"].cpu().numpy()
    assert model.score_samples(X).mean() < log_px.mean()
    assert np.all(elbo_per_row <= log_px + 0.5)


def test_information_loss_is_cross_entropy_of_reencoded_logits():
    module = _module()
    torch.manual_seed(1)
    loss = module.information_loss(3)
    torch.manual_seed(1)
    clusters = torch.arange(4).repeat_interleave(3)
    z = module.prior_means[clusters] + torch.randn(12, module.latent_dim)
    logits = module.cluster_logits(module.features(torch.sigmoid(module.decode(z))))
    expected = -logits.log_softmax(-1)[torch.arange(12), clusters].mean()
    torch.testing.assert_close(loss, expected)
    # Computed from logits: a confident correct prediction costs almost nothing,
    # which cross-entropy applied to softmaxed outputs would not allow.
    assert float(F.cross_entropy(torch.tensor([[50.0, 0.0]]), torch.tensor([0]))) < 1e-6


def test_inference_is_deterministic():
    X, _ = digits(100)
    model = InfoCatVAE(n_clusters=3, **QUICK).fit(X)
    assert not model.module_.training
    np.testing.assert_array_equal(model.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(model.transform(X), model.transform(X))
