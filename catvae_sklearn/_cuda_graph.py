"""The training step on CUDA, replayed from a CUDA graph.

A CUDA step launches several hundred kernels, each costing microseconds of
host work, and at the sizes this model trains at those launches, not the
arithmetic, set its time. Replayed from a graph, a step is one launch (the
benchmarks page has the measured figures).
"""

import warnings

import torch

# Eager steps before the capture, so that the optimizer's state and the
# kernels' workspaces exist when it starts (PyTorch's recipe).
WARM_UP_STEPS = 3


def can_capture(module, optimizer, min_decode_proba):
    """Whether a step of ``module`` with ``optimizer`` can be captured.

    On CUDA, with an optimizer whose state lives on the device
    (``capturable``), decoding every cluster (sparse decoding sizes its work
    from q(c|x), which a graph cannot), and on the current GPU: a graph
    captures the current device's stream only, and a module on another GPU
    has not run on a machine with several.
    """
    return (
        module.device.type == "cuda"
        and module.device.index in (None, torch.cuda.current_device())
        and min_decode_proba == 0
        and all(group.get("capturable") for group in optimizer.param_groups)
    )


class GraphedTrainingStep:
    """``eager(xb, guide_labels, guide_weight)``, replayed from a CUDA graph.

    The first :data:`WARM_UP_STEPS` full batches train eagerly on a side
    stream; the next is captured, and it and every later full batch are
    copied into the graph's input and replayed. A last, smaller batch trains
    eagerly. The graph draws its random numbers from the same CUDA
    generator, advanced at each replay, and takes the guide's weight as a
    device tensor, so that it may change between epochs.

    Should the capture fail (an operation that some torch release cannot
    capture, say), training goes on eagerly and a warning says so.
    """

    def __init__(self, eager, module, batch_size, guided):
        self._eager, self.device, self.batch_size = eager, module.device, batch_size
        self._x = torch.zeros(batch_size, module.n_features, device=self.device)
        self._labels = (
            torch.zeros(batch_size, dtype=torch.long, device=self.device) if guided else None
        )
        self._guide_weight = torch.zeros((), device=self.device)
        self._warm_up_left = WARM_UP_STEPS
        self._side_stream = None
        self._graph, self._negative_elbo, self._failed = None, None, False

    def __call__(self, xb, guide_labels, guide_weight):
        if self._failed or xb.shape[0] != self.batch_size:
            return self._eager(xb, guide_labels, guide_weight)
        if self._warm_up_left > 0:
            self._warm_up_left -= 1
            return self._on_side_stream(xb, guide_labels, guide_weight)
        self._x.copy_(xb)
        if self._labels is not None:
            if guide_labels is not None:
                self._labels.copy_(guide_labels)
            # train() passes no labels once the guide's weight reaches 0.
            self._guide_weight.fill_(guide_weight if guide_labels is not None else 0.0)
        if self._graph is None and not self._capture():
            return self._eager(xb, guide_labels, guide_weight)
        self._graph.replay()
        # A copy: the next replay overwrites the graph's output.
        return self._negative_elbo.clone()

    def _on_side_stream(self, xb, guide_labels, guide_weight):
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        self._side_stream.wait_stream(current)
        with torch.cuda.stream(self._side_stream):
            negative_elbo = self._eager(xb, guide_labels, guide_weight)
        current.wait_stream(self._side_stream)
        return negative_elbo

    def _capture(self):
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                negative_elbo = self._eager(self._x, self._labels, self._guide_weight)
        except RuntimeError as exc:
            self._failed = True
            warnings.warn(
                f"Capturing the training step in a CUDA graph failed ({exc}); training "
                "continues without it, with one kernel launch per operation.",
                RuntimeWarning,
                stacklevel=4,
            )
            return False
        self._graph, self._negative_elbo = graph, negative_elbo
        return True
