"""The CUDA path: skipped on machines without a GPU."""

import pickle

import numpy as np
import pytest
import torch

from catvae_sklearn import InfoCatVAE

from ._helpers import QUICK, digits

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
