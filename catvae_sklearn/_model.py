"""The InfoCatVAE network and its objective, in plain PyTorch.

Nothing here knows about scikit-learn: the estimator in ``_estimator.py``
builds a :class:`CategoricalVAE`, and ``_training.py`` drives it.

Notation follows Pineau & Lelarge (2018), arXiv:1806.08240: ``K`` clusters,
``delta`` dimensions per cluster, latent dimension ``d = K * delta``.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

BERNOULLI = "bernoulli"
GAUSSIAN = "gaussian"

# Bounds on log-variances: exp() of anything outside overflows float16/32 or
# makes the Gaussian density degenerate, which turns the loss into inf/NaN.
_LOGVAR_MIN, _LOGVAR_MAX = -12.0, 8.0
_LOG_2PI = math.log(2.0 * math.pi)


def _mlp(sizes):
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


class CategoricalVAE(nn.Module):
    """Categorical VAE with one Gaussian posterior per cluster.

    Parameters
    ----------
    n_features : int
    n_clusters : int
    subspace_dim : int
    hidden_layer_sizes : tuple of int
        Encoder trunk widths; the decoder mirrors them.
    prior_scale : float
        ``lambda``: the prior mean of cluster ``c`` is ``lambda`` on the
        ``c``-th block of ``subspace_dim`` coordinates and 0 elsewhere.
    likelihood : {"bernoulli", "gaussian"}
    """

    def __init__(
        self,
        n_features,
        n_clusters,
        subspace_dim,
        hidden_layer_sizes,
        prior_scale,
        likelihood,
    ):
        super().__init__()
        if likelihood not in (BERNOULLI, GAUSSIAN):
            raise ValueError(f"unknown likelihood {likelihood!r}")
        self.n_features = n_features
        self.n_clusters = n_clusters
        self.subspace_dim = subspace_dim
        self.latent_dim = n_clusters * subspace_dim
        self.likelihood = likelihood
        hidden = tuple(hidden_layer_sizes)
        feature_dim = hidden[-1] if hidden else n_features

        self.trunk = _mlp((n_features,) + hidden)
        self.cluster_logits = nn.Linear(feature_dim, n_clusters)
        # q(z|x,c) reads [h(x), onehot(c)]. A linear map of that concatenation
        # is W h + E[c]: computing W h once and broadcasting the K rows of E
        # gives all K heads in one tensor operation.
        head_width = max(feature_dim, 2 * self.latent_dim)
        self.head_features = nn.Linear(feature_dim, head_width)
        self.cluster_codes = nn.Parameter(torch.randn(n_clusters, head_width) * 0.1)
        self.head_output = nn.Linear(head_width, 2 * self.latent_dim)

        decoder_sizes = (self.latent_dim,) + hidden[::-1]
        self.decoder_trunk = _mlp(decoder_sizes)
        self.decoder_output = nn.Linear(decoder_sizes[-1], n_features)
        if likelihood == GAUSSIAN:
            self.decoder_log_scale = nn.Parameter(torch.zeros(n_features))
        # Real-valued data are modelled after standardisation (set by
        # set_data_scale); densities are mapped back to the data's own units.
        self.register_buffer("data_shift", torch.zeros(n_features))
        self.register_buffer("data_scale", torch.ones(n_features))

        prior_means = torch.zeros(n_clusters, self.latent_dim)
        for c in range(n_clusters):
            prior_means[c, c * subspace_dim : (c + 1) * subspace_dim] = prior_scale
        self.register_buffer("prior_means", prior_means)

    def set_data_scale(self, shift, scale):
        """Standardise inputs as ``(x - shift) / scale`` inside the network."""
        self.data_shift.copy_(shift)
        self.data_scale.copy_(scale)

    def _standardise(self, x):
        if self.likelihood == BERNOULLI:
            return x
        return (x - self.data_shift) / self.data_scale

    # ----------------------------------------------------------------- encoder
    def features(self, x):
        return self.trunk(self._standardise(x))

    def logits(self, x):
        """Logits of q(c|x), without computing the per-cluster heads."""
        return self.cluster_logits(self.features(x))

    def posterior_mean(self, x):
        """E_q[z|x] = sum_c q(c|x) m_c(x), shape (n, d)."""
        logits, mean, _ = self.encode(x)
        return (logits.softmax(-1).unsqueeze(-1) * mean).sum(1)

    def encode(self, x):
        """Return ``(logits, mean, logvar)`` of shapes (n, K), (n, K, d), (n, K, d)."""
        h = self.features(x)
        logits = self.cluster_logits(h)
        g = F.relu(self.head_features(h).unsqueeze(1) + self.cluster_codes)
        mean, logvar = self.head_output(g).chunk(2, dim=-1)
        return logits, mean, logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX)

    # ----------------------------------------------------------------- decoder
    def decode(self, z):
        """Decoder output: Bernoulli logits or Gaussian means, shape (..., D)."""
        return self.decoder_output(self.decoder_trunk(z))

    def decoded_mean(self, z):
        """Mean of p(x|z) in the data's own units."""
        out = self.decode(z)
        if self.likelihood == BERNOULLI:
            return torch.sigmoid(out)
        return out * self.data_scale + self.data_shift

    def log_likelihood(self, x, out):
        """``log p(x|z)`` summed over features; ``x`` broadcasts against ``out``."""
        if self.likelihood == BERNOULLI:
            x = x.expand_as(out)
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
        # N(x; mean, s^2) in data units is N(x'; mean', s'^2) / data_scale
        # for x' = (x - shift) / data_scale: hence the log(data_scale) term.
        log_scale = self.decoder_log_scale.clamp(_LOGVAR_MIN / 2, _LOGVAR_MAX / 2)
        residual = (self._standardise(x) - out) * torch.exp(-log_scale)
        log_density = -(0.5 * residual.pow(2) + log_scale + 0.5 * _LOG_2PI).sum(-1)
        return log_density - torch.log(self.data_scale).sum()

    # --------------------------------------------------------------- objective
    def elbo(self, x, noise=None):
        """Per-sample ELBO and its parts.

        Parameters
        ----------
        x : tensor of shape (n, D)
        noise : tensor of shape (S, K, d), optional
            Standard normal draws for the reparameterisation, shared by every
            row so that a row's estimate does not depend on its batch. Fresh
            draws of shape (n, K, d) are used when omitted.

        Returns
        -------
        dict with ``elbo``, ``reconstruction``, ``kl_z``, ``kl_c`` (each (n,)),
        ``logits`` (n, K) and ``resp`` (n, K), the posterior q(c|x).
        """
        logits, mean, logvar = self.encode(x)
        std = torch.exp(0.5 * logvar)
        if noise is None:
            z = (mean + std * torch.randn_like(std)).unsqueeze(0)
        else:
            z = mean.unsqueeze(0) + std.unsqueeze(0) * noise.unsqueeze(1)
        # z: (S, n, K, d) -> expected log-likelihood per (n, K)
        reconstruction = self.log_likelihood(x.unsqueeze(1), self.decode(z)).mean(0)
        kl_z = 0.5 * (
            logvar.exp() + (mean - self.prior_means).pow(2) - 1.0 - logvar
        ).sum(-1)
        log_resp = F.log_softmax(logits, dim=-1)
        resp = log_resp.exp()
        kl_c = (resp * log_resp).sum(-1) + math.log(self.n_clusters)
        elbo = (resp * (reconstruction - kl_z)).sum(-1) - kl_c
        return {
            "elbo": elbo,
            "reconstruction": (resp * reconstruction).sum(-1),
            "kl_z": (resp * kl_z).sum(-1),
            "kl_c": kl_c,
            "logits": logits,
            "resp": resp,
        }

    def sample_prior(self, clusters):
        """Draw ``z ~ p(z|c)`` for each cluster index in ``clusters``."""
        means = self.prior_means[clusters]
        return means + torch.randn_like(means)

    def information_loss(self, n_per_cluster):
        """Cross-entropy between re-encoded generated points and their cluster.

        Draws ``z ~ p(z|c)`` for every cluster, decodes to the mean in data
        space, re-encodes, and scores the logits against ``c``.
        """
        clusters = torch.arange(self.n_clusters, device=self.prior_means.device)
        clusters = clusters.repeat_interleave(n_per_cluster)
        generated = self.decoded_mean(self.sample_prior(clusters))
        logits = self.cluster_logits(self.features(generated))
        return F.cross_entropy(logits, clusters)

    def importance_sampled_log_likelihood(self, x, n_samples):
        """Importance-sampling estimate of ``log p(x)`` with q(c, z|x) as proposal.

        Used to check that the ELBO is a lower bound; costs ``n_samples`` decodes.
        """
        logits, mean, logvar = self.encode(x)
        log_resp = F.log_softmax(logits, dim=-1)
        n = x.shape[0]
        rows = torch.arange(n, device=x.device)
        c = torch.distributions.Categorical(logits=logits).sample((n_samples,))  # (S, n)
        m, lv = mean[rows, c], logvar[rows, c]  # (S, n, d)
        eps = torch.randn_like(m)
        z = m + torch.exp(0.5 * lv) * eps
        # log q(z|x,c) of z = m + std * eps is log N(eps; 0, I) - sum(log std).
        log_q = log_resp[rows, c] + _standard_normal_log_prob(eps) - 0.5 * lv.sum(-1)
        log_p = (
            -math.log(self.n_clusters)
            + _standard_normal_log_prob(z - self.prior_means[c])
            + self.log_likelihood(x, self.decode(z))
        )
        return torch.logsumexp(log_p - log_q, dim=0) - math.log(n_samples)


def _standard_normal_log_prob(eps):
    return -0.5 * (eps.pow(2) + _LOG_2PI).sum(-1)
