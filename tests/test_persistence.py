"""Pickle, joblib and the code-free save/load format."""

import json
import pickle
import warnings
import zipfile

import joblib
import numpy as np
import pytest

import catvae_sklearn
from catvae_sklearn import DeviceWarning, InfoCatVAE

from ._helpers import QUICK, digits


@pytest.fixture(scope="module")
def model_and_data():
    X, _ = digits(200)
    return InfoCatVAE(n_clusters=4, **QUICK).fit(X), X


def _read_archive(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("model.json")), archive.read("weights.pt")


def _write_archive(path, meta, weights):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model.json", json.dumps(meta))
        archive.writestr("weights.pt", weights)


def _assert_same_model(a, b, X):
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.get_params() == b.get_params()


def test_pickle_round_trip(model_and_data):
    model, X = model_and_data
    _assert_same_model(model, pickle.loads(pickle.dumps(model)), X)
    # Pickling must not strip the live estimator of its network.
    assert hasattr(model, "module_")


def test_joblib_round_trip(model_and_data, tmp_path):
    model, X = model_and_data
    joblib.dump(model, tmp_path / "model.joblib")
    _assert_same_model(model, joblib.load(tmp_path / "model.joblib"), X)


def test_save_load_round_trip(model_and_data, tmp_path):
    model, X = model_and_data
    path = tmp_path / "model.catvae"
    model.save(path)
    loaded = InfoCatVAE.load(path)
    _assert_same_model(model, loaded, X)
    assert loaded.n_iter_ == model.n_iter_
    assert loaded.loss_curve_ == model.loss_curve_
    assert loaded.likelihood_ == model.likelihood_


def test_save_load_keeps_feature_names(tmp_path):
    pd = pytest.importorskip("pandas")
    X, _ = digits(100)
    df = pd.DataFrame(X, columns=[f"px{i}" for i in range(X.shape[1])])
    model = InfoCatVAE(n_clusters=3, **QUICK).fit(df)
    model.save(tmp_path / "m")
    loaded = InfoCatVAE.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.feature_names_in_, model.feature_names_in_)


def test_saved_file_carries_version_and_checksum(model_and_data, tmp_path):
    model, _ = model_and_data
    model.save(tmp_path / "m")
    meta, _ = _read_archive(tmp_path / "m")
    assert meta["library_version"] == catvae_sklearn.__version__
    assert len(meta["weights_sha256"]) == 64


def test_truncated_file_gives_clear_error(model_and_data, tmp_path):
    model, _ = model_and_data
    path = tmp_path / "m"
    model.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a valid InfoCatVAE model file"):
        InfoCatVAE.load(path)


def test_corrupted_weights_fail_the_checksum(model_and_data, tmp_path):
    model, _ = model_and_data
    path = tmp_path / "m"
    model.save(path)
    meta, weights = _read_archive(path)
    weights = bytearray(weights)
    weights[len(weights) // 2] ^= 0xFF
    _write_archive(path, meta, bytes(weights))
    with pytest.raises(ValueError, match="checksum"):
        InfoCatVAE.load(path)


class _Boom:
    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise AssertionError("loading ran code from the file")


def test_a_pickle_under_the_model_name_is_refused_without_running_it(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="pickle, which is never loaded"):
        InfoCatVAE.load(path)


def test_pickled_weights_inside_a_valid_archive_are_refused(model_and_data, tmp_path):
    import hashlib

    model, _ = model_and_data
    path = tmp_path / "m"
    model.save(path)
    meta, _ = _read_archive(path)
    evil = pickle.dumps(_Boom())
    meta["weights_sha256"] = hashlib.sha256(evil).hexdigest()
    _write_archive(path, meta, evil)
    with pytest.raises(ValueError, match="weights could not be read"):
        InfoCatVAE.load(path)


def test_newer_format_is_refused_with_upgrade_hint(model_and_data, tmp_path):
    model, _ = model_and_data
    path = tmp_path / "m"
    model.save(path)
    meta, weights = _read_archive(path)
    meta["format_version"] = 99
    _write_archive(path, meta, weights)
    with pytest.raises(ValueError, match="upgrade catvae_sklearn"):
        InfoCatVAE.load(path)


def test_model_recorded_on_an_absent_device_loads_on_cpu_with_a_warning(model_and_data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    model, X = model_and_data
    # As a GPU-fitted model would arrive: parameters say CUDA, tensors are CPU.
    gpu_model = pickle.loads(pickle.dumps(model))
    gpu_model.device = "cuda"
    gpu_model.device_ = "cuda"
    with pytest.warns(DeviceWarning, match="device='cuda'.*placed on the CPU"):
        restored = pickle.loads(pickle.dumps(gpu_model))
    assert restored.device_ == "cpu"
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    gpu_model.save(tmp_path / "m")
    with pytest.warns(DeviceWarning):
        assert InfoCatVAE.load(tmp_path / "m").device_ == "cpu"
    # Asked for explicitly, the CPU is no fallback and needs no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert InfoCatVAE.load(tmp_path / "m", device="cpu").device_ == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            InfoCatVAE.load(tmp_path / "m", device="cuda")


def test_unfitted_model_cannot_be_saved(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        InfoCatVAE().save(tmp_path / "m")
