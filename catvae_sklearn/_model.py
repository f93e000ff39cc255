"""The InfoCatVAE network and its objective, in plain PyTorch.

Nothing here knows about scikit-learn: the estimator in ``_estimator.py``
builds a :class:`CategoricalVAE`, and ``_training.py`` drives it. The
training objective is :meth:`CategoricalVAE.training_loss`, written once:
every training step, eager or replayed from a CUDA graph, calls it.

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

# Weight of the guide's cross-entropy at full strength, in nats per sample:
# large enough that q(c|x) takes the initial partition within the first
# epochs against an ELBO of tens to hundreds of nats.
GUIDE_SCALE = 10.0 * 2.3


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

    @property
    def device(self):
        """The device the network's weights and buffers are on."""
        return self.prior_means.device

    def set_data_scale(self, shift, scale):
        """Standardise inputs as ``(x - shift) / scale`` inside the network."""
        self.data_shift.copy_(shift)
        self.data_scale.copy_(scale)

    def _standardise(self, x):
        if self.likelihood == BERNOULLI:
            return x
        return (x - self.data_shift) / self.data_scale

    def start_trunk_from(self, weight, bias):
        """Copy ``weight`` and ``bias`` (numpy arrays) into the encoder's
        first layer when their shapes match it; return whether they did.

        The start's autoencoder reads the same standardised rows, and its
        first layer, learned without labels, gives q(c|x) features that
        carry to rows it was not fitted on better than random ones do.
        """
        first = self.trunk[0] if len(self.trunk) else None
        if first is None or tuple(first.weight.shape) != weight.shape:
            return False
        with torch.no_grad():
            first.weight.copy_(torch.as_tensor(weight, device=self.device))
            first.bias.copy_(torch.as_tensor(bias, device=self.device))
        return True

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
        return (self.cluster_logits(h),) + self._every_cluster_head(h)

    def _every_cluster_head(self, h):
        """Mean and log-variance of q(z|x,c) for every cluster, each (n, K, d)."""
        return self._gaussian_head(self.head_features(h).unsqueeze(1) + self.cluster_codes)

    def _gaussian_head(self, pre_activation):
        """Mean and log-variance of q(z|x,c) from ``W h(x) + E[c]``."""
        mean, logvar = self.head_output(F.relu(pre_activation)).chunk(2, dim=-1)
        return mean, logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX)

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
    def elbo(self, x, noise=None, min_decode_proba=0.0, pair_multiple=1):
        """Per-sample ELBO and its parts.

        Parameters
        ----------
        x : tensor of shape (n, D)
        noise : tensor of shape (S, K, d), optional
            Standard normal draws for the reparameterisation, shared by every
            row so that a row's estimate does not depend on its batch. Fresh
            draws of shape (n, K, d) are used when omitted.
        min_decode_proba : float, default=0.0
            Evaluate a row only under the clusters with ``q(c|x)`` at least
            this, and always its most likely one (see
            :meth:`_likely_cluster_terms`); 0 evaluates every cluster.
        pair_multiple : int, default=1
            With ``min_decode_proba > 0``, evaluate the (row, cluster) pairs
            in a batch padded to a multiple of this many, the padding
            discarded: the ELBO is the same, and the network's matrices
            take a few shapes instead of one per batch, which kernels
            compiled per shape (bfloat16 on the CPU) need to stay fast.

        Returns
        -------
        dict with ``elbo``, ``reconstruction``, ``kl_z``, ``kl_c`` (each (n,)),
        ``logits`` (n, K) and ``resp`` (n, K), the posterior q(c|x).
        """
        h = self.features(x)
        logits = self.cluster_logits(h)
        # float32 even under the CPU's autocast, which would keep bfloat16.
        log_resp = F.log_softmax(logits.float(), dim=-1)
        resp = log_resp.exp()
        if min_decode_proba > 0:
            reconstruction, kl_z = self._likely_cluster_terms(
                x, h, resp, noise, min_decode_proba, pair_multiple
            )
        else:
            reconstruction, kl_z = self._every_cluster_terms(x, h, noise)
        kl_c = (resp * log_resp).sum(-1) + math.log(self.n_clusters)
        # A cluster with q(c|x) = 0 adds nothing, even where its fit is -inf
        # (a point too far out for float32): 0 * -inf would make the ELBO NaN.
        weighted = torch.where(resp > 0, resp * (reconstruction - kl_z), 0.0)
        elbo = weighted.sum(-1) - kl_c
        return {
            "elbo": elbo,
            "reconstruction": (resp * reconstruction).sum(-1),
            "kl_z": (resp * kl_z).sum(-1),
            "kl_c": kl_c,
            "logits": logits,
            "resp": resp,
        }

    def training_loss(
        self,
        x,
        *,
        min_decode_proba=0.0,
        pair_multiple=1,
        info_weight=0.0,
        info_per_cluster=1,
        balance_weight=0.0,
        guide_labels=None,
        guide_weight=0.0,
    ):
        """The loss training minimises on the batch ``x``, and each row's negative ELBO.

        The mean negative ELBO, plus ``info_weight`` times the information
        term (:meth:`information_loss` on ``info_per_cluster`` draws per
        cluster), plus ``balance_weight`` times ``KL(mean_batch q(c|x) ||
        p(c))``, plus ``guide_weight`` times the cross-entropy of ``q(c|x)``
        against ``guide_labels`` (scaled by :data:`GUIDE_SCALE`). With
        ``min_decode_proba=0``, ``balance_weight=0`` and no guide this is the
        paper's objective; ``info_weight=0`` makes it the plain CatVAE's.

        ``guide_weight`` may be a tensor: a CUDA graph reads its weight from
        device memory, so the labels, not a positive weight, switch the guide on.

        Returns
        -------
        loss : scalar tensor
        negative_elbo : tensor of shape (n,)
        """
        out = self.elbo(x, min_decode_proba=min_decode_proba, pair_multiple=pair_multiple)
        negative_elbo = -out["elbo"]
        loss = negative_elbo.mean()
        if info_weight > 0:
            loss = loss + info_weight * self.information_loss(info_per_cluster)
        if balance_weight > 0:
            loss = loss + balance_weight * _balance_penalty(out["resp"])
        if guide_labels is not None:
            guide = F.cross_entropy(out["logits"], guide_labels)
            loss = loss + guide_weight * GUIDE_SCALE * guide
        return loss, negative_elbo

    def _every_cluster_terms(self, x, h, noise):
        """``E_q(z|x,c) log p(x|z)`` and ``KL(q(z|x,c) || p(z|c))``, each (n, K)."""
        mean, logvar = self._every_cluster_head(h)
        eps = torch.randn_like(mean).unsqueeze(0) if noise is None else noise.unsqueeze(1)
        z = mean + torch.exp(0.5 * logvar) * eps  # (S, n, K, d)
        reconstruction = self.log_likelihood(x.unsqueeze(1), self.decode(z)).mean(0)
        return reconstruction, self._kl_to_prior(mean, logvar, self.prior_means)

    def _likely_cluster_terms(self, x, h, resp, noise, min_decode_proba, pair_multiple=1):
        """The terms of :meth:`_every_cluster_terms`, computed for likely clusters only.

        Every cluster costs each row a Gaussian head of width ``K * delta``
        and a decode, so the exact terms grow as K squared. Here only pairs
        with ``q(c|x) >= min_decode_proba``, and each row's most likely
        cluster, are computed; a trained posterior is peaked, so that is one
        to three clusters a row. A skipped pair enters with its row's worst
        computed reconstruction and KL, without gradient: it still costs
        ``q(c|x)`` times a poor fit, so the encoder is not drawn towards
        clusters it never sees evaluated. The row's ELBO moves by the skipped
        clusters' total ``q(c|x)`` (under ``K * min_decode_proba``) times the
        gap between their fit and that worst one.

        The pairs are padded with copies of the first to a multiple of
        ``pair_multiple``; the copies' terms are dropped before they reach
        the loss, so they add no gradient.
        """
        with torch.no_grad():
            rows, clusters = self.likely_clusters(resp, min_decode_proba).nonzero(as_tuple=True)
        n_pairs = rows.shape[0]
        padded_rows = _padded(rows, pair_multiple)
        padded_clusters = _padded(clusters, pair_multiple)
        # index_select, not h[rows]: the gradient of advanced indexing adds
        # repeated rows with atomic adds in thread order on the CPU, so two
        # fits with the same random_state would differ in the last bits.
        mean, logvar = self._gaussian_head(
            self.head_features(h).index_select(0, padded_rows)
            + self.cluster_codes.index_select(0, padded_clusters)
        )
        eps = torch.randn_like(mean).unsqueeze(0) if noise is None else noise[:, padded_clusters]
        z = mean + torch.exp(0.5 * logvar) * eps  # (S, P, d)
        reconstruction = self.log_likelihood(
            x.index_select(0, padded_rows), self.decode(z)
        ).mean(0)[:n_pairs]
        kl_z = self._kl_to_prior(mean, logvar, self.prior_means[padded_clusters])[:n_pairs]
        return (
            _spread_over_clusters(reconstruction, rows, clusters, resp, "amin"),
            _spread_over_clusters(kl_z, rows, clusters, resp, "amax"),
        )

    @staticmethod
    def likely_clusters(resp, min_decode_proba):
        """Mask (n, K) of the clusters a row is evaluated under in training:
        ``q(c|x) >= min_decode_proba``, and always the most likely one."""
        keep = resp >= min_decode_proba
        keep[torch.arange(resp.shape[0], device=resp.device), resp.argmax(1)] = True
        return keep

    @staticmethod
    def _kl_to_prior(mean, logvar, prior_means):
        return 0.5 * (logvar.exp() + (mean - prior_means).pow(2) - 1.0 - logvar).sum(-1)

    def sample_prior(self, clusters):
        """Draw ``z ~ p(z|c)`` for each cluster index in ``clusters``."""
        means = self.prior_means[clusters]
        return means + torch.randn_like(means)

    def information_loss(self, n_per_cluster):
        """Cross-entropy between re-encoded generated points and their cluster.

        Draws ``z ~ p(z|c)`` for every cluster, decodes to the mean in data
        space, re-encodes, and scores the logits against ``c``.
        """
        clusters = torch.arange(self.n_clusters, device=self.device)
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


class Autoencoder(nn.Module):
    """A deterministic autoencoder whose bottleneck feeds the start.

    The ``"tsne"`` and ``"autoencoder"`` starts cluster its embedding before
    the :class:`CategoricalVAE` trains, whose encoder then starts from this
    network's first layer (see :meth:`CategoricalVAE.start_trunk_from`).
    Two hidden layers, not one: the deeper network's embedding separates
    image classes far better.

    Parameters
    ----------
    n_features : int
    likelihood : {"bernoulli", "gaussian"}
        Reconstruction loss: cross-entropy against data in [0, 1], or squared
        error against standardised data.
    hidden_layer_sizes : tuple of int
        Encoder widths; the decoder mirrors them.
    embedding_dim : int
    """

    def __init__(self, n_features, likelihood, hidden_layer_sizes=(500, 500), embedding_dim=10):
        super().__init__()
        if likelihood not in (BERNOULLI, GAUSSIAN):
            raise ValueError(f"unknown likelihood {likelihood!r}")
        self.likelihood = likelihood
        hidden = tuple(hidden_layer_sizes)
        self.encoder = nn.Sequential(
            _mlp((n_features,) + hidden), nn.Linear(hidden[-1], embedding_dim)
        )
        self.decoder = nn.Sequential(
            _mlp((embedding_dim,) + hidden[::-1]), nn.Linear(hidden[0], n_features)
        )

    def forward(self, x):
        """The embedding of ``x``."""
        return self.encoder(x)

    def reconstruction_loss(self, x):
        """Per-sample loss of reconstructing ``x`` from its embedding."""
        out = self.decoder(self.encoder(x))
        if self.likelihood == BERNOULLI:
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(-1)
        return 0.5 * (out - x).pow(2).sum(-1)


def _padded(indices, multiple):
    """``indices`` followed by copies of its first entry, to a multiple of ``multiple``."""
    padding = -indices.shape[0] % multiple
    if padding == 0:
        return indices
    return torch.cat([indices, indices[:1].expand(padding)])


def _spread_over_clusters(values, rows, clusters, like, worst):
    """An (n, K) matrix shaped ``like`` holding ``values`` at (rows, clusters).

    Every other entry is its row's ``worst`` (``"amin"`` or ``"amax"``) value,
    detached, so that it carries no gradient.
    """
    start = math.inf if worst == "amin" else -math.inf
    # dtype of ``values``: under mixed precision they may be narrower than ``like``.
    fill = torch.full_like(like[:, 0], start, dtype=values.dtype).scatter_reduce(
        0, rows, values.detach(), reduce=worst
    )
    return fill.unsqueeze(1).expand_as(like).index_put((rows, clusters), values)


def _balance_penalty(resp):
    """KL(mean_batch q(c|x) || uniform): zero when clusters are used equally."""
    mean_resp = resp.mean(0).clamp_min(1e-12)
    return (mean_resp * torch.log(mean_resp * resp.shape[1])).sum()


def _standard_normal_log_prob(eps):
    return -0.5 * (eps.pow(2) + _LOG_2PI).sum(-1)
