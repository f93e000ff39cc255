"""The training loss's gradient worked out by hand, for training on the CPU.

Autograd records each operation of a training step and replays its
derivative one kernel at a time. At the paper's sizes (batch 128, one layer
of 400 units) the step's matrix products are a small share of what a CPU
spends on it: the default step dispatched 344 operations, of which 28 were
products, and the rest of the step took longer than the products (see the
user guide's "How close training comes to the machine"). Here the loss that
:func:`catvae_sklearn._training.training_step` builds is differentiated by
hand, with no graph, the derivatives of neighbouring operations folded into
one expression, the ELBO's samples and the information term's prior draws
decoded in one pass, and each weight's gradient from the two added up
in place. The default step then dispatches 185 operations, 23 of them
products; in the benchmark runs so far its epoch took 0.83x to 0.90x the
autograd epoch's time (medians over 7 repeats,
``benchmarks/results/speed_cpu.md``).

The random draws come in the same order and shapes as in
:meth:`CategoricalVAE.elbo` and :meth:`CategoricalVAE.information_loss`, so
under the same seed both compute the same loss and, up to rounding, the
same gradient (``tests/test_gradients.py`` checks this for every setting).
"""

import math

import torch
from torch import nn

from ._model import _LOG_2PI, _LOGVAR_MAX, _LOGVAR_MIN, BERNOULLI, _spread_over_clusters


def _linear_layers(sequential):
    return [layer for layer in sequential if isinstance(layer, nn.Linear)]


def _relu_layers(x, layers):
    """``x`` through Linear + ReLU ``layers``, and each layer's input."""
    inputs = []
    for layer in layers:
        inputs.append(x)
        x = torch.addmm(layer.bias, x, layer.weight.t()).relu_()
    return x, inputs


class _Gradients(dict):
    """Each parameter's gradient, added up over the branches of the loss."""

    def add_linear(self, layer, grad_output, layer_input):
        weight, bias = layer.weight, layer.bias
        if weight in self:
            # In place: the sum is this dict's own tensor, and a fresh one
            # would cost a copy of the weight's size before the product.
            self[weight].addmm_(grad_output.t(), layer_input)
            self[bias].add_(grad_output.sum(0))
        else:
            self[weight] = grad_output.t().mm(layer_input)
            self[bias] = grad_output.sum(0)

    def add(self, parameter, grad):
        if parameter in self:
            self[parameter].add_(grad)
        else:
            self[parameter] = grad

    def relu_layers_backward(self, grad, output, inputs, layers, input_grad=True):
        """Backward of :func:`_relu_layers` given the gradient of its
        ``output``; returns the gradient of its input when ``input_grad``."""
        for i in reversed(range(len(layers))):
            grad = torch.ops.aten.threshold_backward(grad, output, 0)
            self.add_linear(layers[i], grad, inputs[i])
            if i == 0 and not input_grad:
                return None
            grad = grad.mm(layers[i].weight)
            output = inputs[i]
        return grad

    def linear_backward(self, layer, grad_output, layer_input, input_grad=True):
        self.add_linear(layer, grad_output, layer_input)
        return grad_output.mm(layer.weight) if input_grad else None


def _cross_entropy_grad(probabilities, labels, weight, into=None):
    """Gradient of ``weight * cross_entropy(logits, labels)`` (a batch mean)
    with respect to the logits, given their softmax ``probabilities``: added
    to ``into`` when given, otherwise written over ``probabilities``."""
    scale = weight / len(labels)
    if into is None:
        into = probabilities.mul_(scale)
    else:
        into.add_(probabilities, alpha=scale)
    return into.scatter_(1, labels.unsqueeze(1), -scale, reduce="add")


def _bernoulli_log_likelihood(x, logits, probabilities):
    """``log p(x|z)`` summed over features, as ``CategoricalVAE.log_likelihood``
    computes it, from the logits and their sigmoid.

    ``x * logits - softplus(logits)``, with softplus written as
    ``relu(logits) - log(sigmoid(|logits|))``: ``sigmoid(|logits|)`` is the
    larger of ``probabilities`` and ``1 - probabilities``, at least 1/2, so its
    logarithm stays finite and within float32 rounding of the exact value
    even where the sigmoid itself rounds to 0 or 1. torch's
    ``binary_cross_entropy_with_logits`` spends most of its time in
    ``log1p``, which here took four times as long as ``log``.
    """
    log_sigmoid_of_magnitude = torch.maximum(probabilities, 1.0 - probabilities).log_()
    return torch.addcmul(log_sigmoid_of_magnitude.sub_(logits.relu()), x, logits).sum(-1)


# inference_mode rather than no_grad: it skips the version counting and view
# tracking autograd would need, which is most of a small operation's overhead.
@torch.inference_mode()
def loss_and_gradients(
    module,
    x,
    *,
    min_decode_proba,
    info_weight,
    info_per_cluster,
    balance_weight,
    guide_labels=None,
    guide_weight=0.0,
):
    """Set each parameter's ``.grad`` to the gradient of the training loss.

    The loss is the batch's mean negative ELBO (with reparameterisation
    noise drawn here), plus ``info_weight`` times the information term on
    ``info_per_cluster`` points of every cluster, ``balance_weight`` times
    the balance penalty of ``_training._balance_penalty``, and
    ``guide_weight`` times the cross-entropy of ``q(c|x)`` against
    ``guide_labels``. One noise sample per row, and no autocast: what
    training on the CPU uses.

    Returns the batch's summed negative ELBO, a 0-d tensor. The gradients
    and the returned tensor are inference tensors: they may be read outside
    this function, not updated in place.
    """
    n_rows, n_clusters = x.shape[0], module.n_clusters
    latent_dim = module.latent_dim
    trunk = _linear_layers(module.trunk)
    decoder_trunk = _linear_layers(module.decoder_trunk)
    cluster_logits, head_features = module.cluster_logits, module.head_features
    head_output, decoder_output = module.head_output, module.decoder_output
    gradients = _Gradients()

    # ------------------------------------------------------- ELBO, forward
    encoded = module._standardise(x)
    h, trunk_inputs = _relu_layers(encoded, trunk)
    logits = torch.addmm(cluster_logits.bias, h, cluster_logits.weight.t())
    log_resp = logits.log_softmax(-1)
    resp = log_resp.exp()
    if min_decode_proba > 0:
        evaluated = module.likely_clusters(resp, min_decode_proba)
    else:
        evaluated = torch.ones_like(resp, dtype=torch.bool)
    rows, clusters = evaluated.nonzero(as_tuple=True)

    head_input = torch.addmm(head_features.bias, h, head_features.weight.t())
    head_hidden = (
        head_input.index_select(0, rows) + module.cluster_codes.index_select(0, clusters)
    ).relu_()
    head = torch.addmm(head_output.bias, head_hidden, head_output.weight.t())
    mean, raw_logvar = head[:, :latent_dim], head[:, latent_dim:]
    logvar = raw_logvar.clamp(_LOGVAR_MIN, _LOGVAR_MAX)
    std = logvar.mul(0.5).exp_()
    spread = std * torch.randn_like(mean)
    z = mean + spread
    n_pairs = len(z)
    if info_weight > 0:
        # The information term's prior draws go through the decoder with the
        # ELBO's samples, as one batch of larger products.
        info_clusters = torch.arange(n_clusters, device=x.device)
        info_clusters = info_clusters.repeat_interleave(info_per_cluster)
        z = torch.cat([z, module.sample_prior(info_clusters)])
    decoder_hidden, decoder_inputs = _relu_layers(z, decoder_trunk)
    decoded = torch.addmm(decoder_output.bias, decoder_hidden, decoder_output.weight.t())
    out = decoded[:n_pairs]
    target = encoded.index_select(0, rows)

    if module.likelihood == BERNOULLI:
        # One sigmoid for all rows serves the log-likelihood here and every
        # row's gradient below: the information term's rows are its generated
        # images until their gradient replaces them.
        decoded_grad = torch.sigmoid(decoded)
        reconstruction = _bernoulli_log_likelihood(target, out, decoded_grad[:n_pairs])
    else:
        # Worked out here rather than by log_likelihood: the backward pass
        # needs the scaled residual.
        log_scale = module.decoder_log_scale.clamp(_LOGVAR_MIN / 2, _LOGVAR_MAX / 2)
        inverse_scale = torch.exp(-log_scale)
        residual = (target - out).mul_(inverse_scale)
        constant = log_scale.sum() + 0.5 * _LOG_2PI * x.shape[1]
        constant = constant + torch.log(module.data_scale).sum()
        reconstruction = residual.pow(2).sum(-1).mul_(-0.5).sub_(constant)
    prior_means = module.prior_means.index_select(0, clusters)
    kl_z = module._kl_to_prior(mean, logvar, prior_means)

    # Every pair left out counts at its row's worst computed fit (see
    # CategoricalVAE._likely_cluster_terms), and adds nothing where q(c|x) = 0.
    fit = _spread_over_clusters(reconstruction, rows, clusters, resp, "amin")
    fit = fit - _spread_over_clusters(kl_z, rows, clusters, resp, "amax")
    fit = torch.where(resp > 0, fit, 0.0)
    negative_entropy = (resp * log_resp).sum(-1)
    elbo = (resp * fit).sum(-1) - negative_entropy - math.log(n_clusters)

    # ------------------------------------------------------ ELBO, backward
    # The loss is -mean(elbo) + ...: each row weighs 1 / n_rows.
    resp_grad = (log_resp - fit).div_(n_rows)
    if balance_weight > 0:
        mean_resp = resp.mean(0)
        used = mean_resp >= 1e-12
        log_ratio = torch.log(mean_resp.clamp_min(1e-12) * n_clusters) + 1.0
        resp_grad += torch.where(used, log_ratio, 0.0) * (balance_weight / n_rows)
    logits_grad = resp * (resp_grad - (resp * resp_grad).sum(-1, keepdim=True))
    if guide_weight > 0:
        # resp is softmax(logits) already: no second softmax.
        _cross_entropy_grad(resp, guide_labels, guide_weight, into=logits_grad)

    pair_weight = resp[rows, clusters].div_(n_rows).unsqueeze(1)
    # The gradient of every decoded row goes into one buffer, the ELBO's rows
    # first, so that the decoder's backward pass needs no concatenation.
    if module.likelihood == BERNOULLI:
        decoded_grad[:n_pairs].sub_(target).mul_(pair_weight)
    else:
        decoded_grad = torch.empty_like(decoded)
        torch.mul(residual, inverse_scale, out=decoded_grad[:n_pairs]).mul_(-pair_weight)
        log_scale_grad = (residual.pow(2) - 1.0).mul_(pair_weight).sum(0).neg_()
        unclamped = log_scale == module.decoder_log_scale
        gradients.add(module.decoder_log_scale, torch.where(unclamped, log_scale_grad, 0.0))
    if info_weight > 0:
        _information_out_grad(
            module,
            trunk,
            gradients,
            decoded[n_pairs:],
            info_clusters,
            info_weight,
            decoded_grad[n_pairs:],
        )
    decoder_hidden_grad = gradients.linear_backward(decoder_output, decoded_grad, decoder_hidden)
    z_grad = gradients.relu_layers_backward(
        decoder_hidden_grad, decoder_hidden, decoder_inputs, decoder_trunk
    )[:n_pairs]
    mean_grad = torch.addcmul(z_grad, mean - prior_means, pair_weight)
    logvar_grad = (z_grad * spread).add_((std * std - 1.0).mul_(pair_weight)).mul_(0.5)
    logvar_grad = torch.where(logvar == raw_logvar, logvar_grad, 0.0)
    head_grad = torch.cat([mean_grad, logvar_grad], 1)
    head_hidden_grad = gradients.linear_backward(head_output, head_grad, head_hidden)
    head_hidden_grad = torch.ops.aten.threshold_backward(head_hidden_grad, head_hidden, 0)
    gradients.add(
        module.cluster_codes,
        torch.zeros_like(module.cluster_codes).index_add_(0, clusters, head_hidden_grad),
    )
    head_input_grad = torch.zeros_like(head_input).index_add_(0, rows, head_hidden_grad)
    gradients.add_linear(head_features, head_input_grad, h)
    gradients.add_linear(cluster_logits, logits_grad, h)
    h_grad = torch.addmm(
        logits_grad.mm(cluster_logits.weight), head_input_grad, head_features.weight
    )
    gradients.relu_layers_backward(h_grad, h, trunk_inputs, trunk, input_grad=False)

    for parameter in module.parameters():
        parameter.grad = gradients.get(parameter)
    return -elbo.sum()


def _information_out_grad(module, trunk, gradients, out, clusters, weight, out_grad):
    """Add the encoder's share of the gradient of ``weight`` times the
    information term, given the decoder's output ``out`` for prior draws of
    ``clusters``, and write the gradient of ``out`` into ``out_grad``.
    ``trunk`` holds the linear layers of ``module.trunk``. For the Bernoulli
    likelihood ``out_grad`` holds ``sigmoid(out)`` on entry: the caller
    computes it with the ELBO's rows."""
    cluster_logits = module.cluster_logits
    if module.likelihood == BERNOULLI:
        generated = out_grad
        encoded = generated
    else:
        # decoded_mean maps to data units and the encoder standardises back.
        encoded = module._standardise(out * module.data_scale + module.data_shift)
    h, trunk_inputs = _relu_layers(encoded, trunk)
    logits = torch.addmm(cluster_logits.bias, h, cluster_logits.weight.t())

    logits_grad = _cross_entropy_grad(logits.softmax(-1), clusters, weight)
    h_grad = gradients.linear_backward(cluster_logits, logits_grad, h)
    encoded_grad = gradients.relu_layers_backward(h_grad, h, trunk_inputs, trunk)
    if module.likelihood == BERNOULLI:
        # In place: the weights' gradients above were the last to read it.
        torch.ops.aten.sigmoid_backward.grad_input(encoded_grad, generated, grad_input=out_grad)
    else:
        out_grad.copy_(encoded_grad)  # the scaling and its inverse cancel
