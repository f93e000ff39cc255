"""The CUDA path: skipped on machines without a GPU."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from catvae_sklearn import InfoCatVAE

from ._helpers import QUICK, digits, training_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_fit_on_cuda_returns_numpy_on_cpu():
    X, _ = digits(300)
    model = InfoCatVAE(n_clusters=4, device="cuda", **QUICK).fit(X)
    assert model.device_.startswith("cuda")
    for out in (model.predict(X), model.predict_proba(X), model.transform(X),
                model.score_samples(X), model.sample(3)[0]):
        assert isinstance(out, np.ndarray)


def test_cuda_model_pickles_to_cpu_state():
    X, _ = digits(200)
    model = InfoCatVAE(n_clusters=3, device="cuda", **QUICK).fit(X)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


def test_save_on_cuda_load_on_cpu(tmp_path):
    X, _ = digits(200)
    model = InfoCatVAE(n_clusters=3, device="cuda", **QUICK).fit(X)
    model.save(tmp_path / "m")
    loaded = InfoCatVAE.load(tmp_path / "m", device="cpu")
    assert loaded.device_ == "cpu"
    assert np.mean(loaded.predict(X) == model.predict(X)) > 0.99


def test_cuda_and_cpu_agree_on_most_labels():
    X, _ = digits(300)
    gpu = InfoCatVAE(n_clusters=4, device="cuda", **QUICK).fit(X)
    state = pickle.loads(pickle.dumps(gpu))
    state._restore_module(
        {k: v.cpu() for k, v in gpu.module_.state_dict().items()}, "cpu"
    )
    assert np.mean(state.predict(X) == gpu.predict(X)) > 0.99


def test_data_too_large_for_the_gpu_stream_from_pinned_host_memory(monkeypatch):
    from catvae_sklearn import _device

    X, _ = digits(300)
    resident = InfoCatVAE(n_clusters=4, device="cuda", **QUICK).fit(X)
    monkeypatch.setattr(_device, "_RESIDENT_DATA_FRACTION", 0.0)
    homes = []
    original = _device.to_tensor

    def recording_to_tensor(values, device):
        homes.append(torch.device(device).type)
        return original(values, device)

    monkeypatch.setattr("catvae_sklearn._estimator.to_tensor", recording_to_tensor)
    streamed = InfoCatVAE(n_clusters=4, device="cuda", **QUICK).fit(X)
    assert homes[0] == "cpu"  # the training data stayed on the host
    assert np.isfinite(streamed.loss_curve_).all()
    # Batches are shuffled by the host's generator instead of the GPU's, so
    # the fits differ in their draws but should find the same partition.
    assert adjusted_rand_score(streamed.labels_, resident.labels_) > 0.9


def test_a_training_step_does_not_wait_for_the_gpu():
    from catvae_sklearn import _device, _training
    from catvae_sklearn._model import CategoricalVAE

    torch.manual_seed(0)
    module = CategoricalVAE(64, 10, 2, (64,), 3.0, "bernoulli").cuda()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    config = training_config(batch_size=128, min_decode_proba=0.0)
    X = torch.as_tensor(digits(256)[0], dtype=torch.float32, device="cuda")
    guide = torch.zeros(256, dtype=torch.long, device="cuda")
    _training.training_step(module, optimizer, X[:128], config, guide[:128], 1.0)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for idx in _device.batches(256, 128, X.device):
            _training.training_step(module, optimizer, X[idx], config, guide[idx], 1.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_mixed_precision_training_keeps_the_float32_elbo():
    import contextlib

    from catvae_sklearn import _training

    X, _ = digits(400)
    mixed = InfoCatVAE(n_clusters=5, device="cuda", **QUICK).fit(X)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_training, "mixed_precision", lambda *args, **kwargs: contextlib.nullcontext())
        full = InfoCatVAE(n_clusters=5, device="cuda", **QUICK).fit(X)
    # score() is always computed in float32; the two fits differ by rounding
    # and by the random draws that rounding reorders, not systematically.
    assert abs(mixed.score(X) - full.score(X)) < 0.05 * abs(full.score(X))


def test_bfloat16_training_reaches_the_elbo_of_float32_within_the_spread_of_seeds():
    # The precision check: ten epochs of the paper's set-up on digits in
    # bfloat16 and float32, against how far two float32 seeds land apart.
    import contextlib

    from catvae_sklearn import _training

    X, _ = digits(1797)
    settings = dict(n_clusters=10, hidden_layer_sizes=(400,), max_iter=10, init_params="random",
                    device="cuda")
    scores = {}
    for name, seed in (("bfloat16", 0), ("float32", 0), ("float32, other seed", 1)):
        with pytest.MonkeyPatch.context() as patch:
            if name.startswith("float32"):
                patch.setattr(_training, "mixed_precision", lambda *args, **kwargs: contextlib.nullcontext())
            scores[name] = InfoCatVAE(random_state=seed, **settings).fit(X).score(X)
    seed_spread = abs(scores["float32"] - scores["float32, other seed"])
    assert abs(scores["bfloat16"] - scores["float32"]) <= max(seed_spread, 0.01 * abs(scores["float32"]))


def _graphed_step(n_rows=128 * 9, guided=True):
    from catvae_sklearn import _training
    from catvae_sklearn._cuda_graph import GraphedTrainingStep
    from catvae_sklearn._model import CategoricalVAE

    torch.manual_seed(0)
    module = CategoricalVAE(64, 10, 2, (64,), 3.0, "bernoulli").cuda()
    optimizer = _training.adam(module.parameters(), 1e-3)
    config = training_config(batch_size=128, cuda_graph=True)
    step = _training.step_function(module, optimizer, config, guided=guided)
    assert isinstance(step, GraphedTrainingStep)
    X = torch.as_tensor(np.tile(digits()[0], (3, 1))[:n_rows], dtype=torch.float32, device="cuda")
    guide = torch.randint(0, 10, (n_rows,), device="cuda")
    return module, step, X, guide


def test_graph_replays_train_the_weights_without_waiting_for_the_gpu():
    from catvae_sklearn._cuda_graph import WARM_UP_STEPS

    module, step, X, guide = _graphed_step()
    batches = [(X[i : i + 128], guide[i : i + 128]) for i in range(0, X.shape[0], 128)]
    losses = [step(xb, gb, 1.0) for xb, gb in batches[: WARM_UP_STEPS + 1]]
    assert step._graph is not None  # warm-up done, the last of those steps captured and replayed
    before = [p.detach().clone() for p in module.parameters()]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses += [step(xb, gb, 0.5) for xb, gb in batches[WARM_UP_STEPS + 1 :]]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    losses = torch.stack(losses).cpu().numpy()
    assert np.isfinite(losses).all()
    assert len(np.unique(losses)) == len(losses)  # each replay's own batch, not a stale output


def test_graphed_and_eager_training_reach_the_same_elbo(monkeypatch):
    from catvae_sklearn import _cuda_graph

    captures = []
    original = _cuda_graph.GraphedTrainingStep._capture

    def recording_capture(self):
        captures.append(original(self))
        return captures[-1]

    monkeypatch.setattr(_cuda_graph.GraphedTrainingStep, "_capture", recording_capture)
    X, _ = digits(400)
    graphed = InfoCatVAE(n_clusters=5, device="cuda", **QUICK).fit(X)
    assert captures and all(captures)
    n_captures = len(captures)
    monkeypatch.setattr("catvae_sklearn._training.can_capture", lambda *args: False)
    eager = InfoCatVAE(n_clusters=5, device="cuda", **QUICK).fit(X)
    assert len(captures) == n_captures
    # The two differ in their random draws, not systematically.
    assert abs(graphed.score(X) - eager.score(X)) < 0.05 * abs(eager.score(X))


def test_a_failed_capture_warns_and_trains_eagerly(monkeypatch):
    from catvae_sklearn import _cuda_graph

    class FailingGraph:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            raise RuntimeError("operation not permitted when stream is capturing")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(_cuda_graph.torch.cuda, "graph", FailingGraph)
    X, _ = digits(400)
    with pytest.warns(RuntimeWarning, match="CUDA graph failed .*operation not permitted"):
        model = InfoCatVAE(n_clusters=5, device="cuda", **QUICK).fit(X)
    assert np.isfinite(model.loss_curve_).all()
    assert model.n_iter_ >= 2
