"""Pickle, joblib and the code-free save/load format."""

import io
import json
import os
import pickle
import resource
import time
import warnings
import zipfile
from pathlib import Path

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


def _write_archive(path, meta, weights, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
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


def test_a_model_fitted_with_a_joblib_memory_saves_with_its_folder(tmp_path):
    X, _ = digits(100)
    cache = tmp_path / "cache"
    model = InfoCatVAE(n_clusters=3, memory=joblib.Memory(cache, verbose=0), **QUICK).fit(X)
    model.save(tmp_path / "m")
    loaded = InfoCatVAE.load(tmp_path / "m")
    assert loaded.memory == str(cache)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    model.set_params(memory=joblib.Memory(None))  # caches nothing
    model.save(tmp_path / "m")
    assert InfoCatVAE.load(tmp_path / "m").memory is None


def test_a_model_whose_sizes_are_numpy_integers_saves_and_loads(tmp_path):
    # What a GridSearchCV over np.arange(...) hands the estimator.
    X, _ = digits(100)
    model = InfoCatVAE(n_clusters=np.int64(3), subspace_dim=np.int64(2), **QUICK).fit(X)
    model.save(tmp_path / "m")
    loaded = InfoCatVAE.load(tmp_path / "m")
    assert (loaded.n_clusters, loaded.subspace_dim) == (3, 2)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def test_save_into_a_missing_folder_names_the_path_asked_for(model_and_data, tmp_path):
    model, _ = model_and_data
    target = tmp_path / "missing" / "model.catvae"
    with pytest.raises(FileNotFoundError, match="model.catvae': the folder .*missing' does not exist"):
        model.save(target)
    assert not (tmp_path / "missing").exists()


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


# ------------------------------------------------------- files from anyone
DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["digits_k3_v0.1.0", "digits_gaussian_stream_v0.1.0"])
def test_files_and_pickles_written_by_version_0_1_0_predict_as_they_did(name):
    expected = np.load(DATA / f"{name}_expected.npz")
    X = expected["X"]
    with (DATA / f"{name}.pkl").open("rb") as handle:
        unpickled = pickle.load(handle)
    # Bit-for-bit equality would test the BLAS, not the file: another CPU
    # rounds the last float64 bit differently. A wrong weight moves far more.
    for model in (InfoCatVAE.load(DATA / f"{name}.catvae"), unpickled):
        np.testing.assert_allclose(model.predict_proba(X), expected["proba"], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(model.score_samples(X), expected["score"], rtol=1e-6)
    # A stream pickled mid-way goes on from where it was.
    unpickled.partial_fit(X)


def _rewritten(path, edit_meta, compression=zipfile.ZIP_STORED):
    meta, weights = _read_archive(path)
    edit_meta(meta)
    _write_archive(path, meta, weights, compression)
    return path


def _edited(model, tmp_path, edit_meta):
    path = tmp_path / "m"
    model.save(path)
    return _rewritten(path, edit_meta)


def _set_both(key, value):
    """Set a parameter and the network configuration alike, as a consistent
    hand-made file would."""

    def edit(meta):
        meta["params"][key] = value
        meta["fitted"]["module_config"][key] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda meta: meta.pop("fitted"), "metadata has no 'fitted'"),
        (lambda meta: meta.pop("params"), "metadata has no 'params'"),
        (lambda meta: meta["params"].update(n_neighbours=3), "does not have: \\['n_neighbours'\\]"),
        (lambda meta: meta.update(params=[["n_clusters", 4]]), "'params' has the wrong type"),
        (lambda meta: meta["params"].update(n_clusters=-3), "parameters are invalid.*n_clusters"),
        (lambda meta: meta["fitted"].update(n_features_in_=12), "disagrees.*n_features"),
        (_set_both("hidden_layer_sizes", [32]), "weights do not fit the network"),
        (_set_both("hidden_layer_sizes", [4_000_000]), "sizes do not fit the size of its weights"),
        (lambda meta: meta["fitted"]["module_config"].update(likelihood="gaussian"),
         "disagrees.*likelihood"),
        (lambda meta: meta["fitted"].update(loss_curve_=["a"]), "not a list of numbers"),
    ],
)
def test_a_malformed_file_gives_a_value_error_naming_file_and_problem(
    model_and_data, tmp_path, edit, message
):
    model, _ = model_and_data
    path = _edited(model, tmp_path, edit)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message) as error:
        InfoCatVAE.load(path)
    assert str(path) in str(error.value)
    assert time.perf_counter() - start < 5


def test_compressed_or_oversized_metadata_is_refused_unread(model_and_data, tmp_path):
    model, _ = model_and_data
    path = tmp_path / "m"
    model.save(path)

    def pad(meta):
        meta["fitted"]["padding"] = " " * (50 * 2**20)  # deflates to about 50 KiB

    _rewritten(path, pad, compression=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 2**20
    with pytest.raises(ValueError, match="compressed"):
        InfoCatVAE.load(path)
    model.save(path)
    _rewritten(path, lambda meta: meta["fitted"].update(padding=" " * 2**21))
    with pytest.raises(ValueError, match="metadata is larger than"):
        InfoCatVAE.load(path)


def test_an_extra_member_is_refused(model_and_data, tmp_path):
    model, _ = model_and_data
    path = tmp_path / "m"
    model.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("payload.bin", b"x")
    with pytest.raises(ValueError, match="members other than"):
        InfoCatVAE.load(path)


def test_an_interrupted_save_leaves_the_previous_file_whole(model_and_data, tmp_path, monkeypatch):
    model, X = model_and_data
    path = tmp_path / "m"
    model.save(path)
    before = path.read_bytes()

    def fail(self, name, data, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "writestr", fail)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m"]  # no partial file left beside it
    np.testing.assert_array_equal(InfoCatVAE.load(path).predict(X), model.predict(X))


# --- the fuzz test: each mutated file loads as the original or fails clearly
_REPLACEMENTS = [None, True, "x", [], {}, 0, -1, 2, 1.5, 1e308, 10**12, [1], {"a": 1}]


def _paths(node, prefix=()):
    """Every key path into a JSON tree."""
    children = node.items() if isinstance(node, dict) else (
        enumerate(node) if isinstance(node, list) else ())
    for key, child in children:
        yield prefix + (key,)
        yield from _paths(child, prefix + (key,))


def _parent(meta, path):
    for key in path[:-1]:
        meta = meta[key]
    return meta


def _mutated_meta(meta, kind, path, replacement):
    parent, key = _parent(meta, path), path[-1]
    if kind == "delete":
        del parent[key]
    elif kind == "rename" and isinstance(parent, dict):
        parent["renamed_" + key] = parent.pop(key)
    elif kind == "number" and isinstance(parent[key], (int, float)):
        parent[key] = parent[key] + (replacement if isinstance(replacement, int) else 1)
    else:
        parent[key] = replacement
    return meta


def _members(path):
    with zipfile.ZipFile(path) as archive:
        return archive.read("model.json"), archive.read("weights.pt")


def _archive_bytes(meta_bytes, weights):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.json", meta_bytes)
        archive.writestr("weights.pt", weights)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    X, _ = digits(100)
    model = InfoCatVAE(n_clusters=3, hidden_layer_sizes=(8,), max_iter=2, pretrain_iter=1,
                       random_state=0, device="cpu").fit(X)
    path = tmp_path_factory.mktemp("fuzz") / "model.catvae"
    model.save(path)
    return model, X, path.read_bytes(), _members(path)


def _max_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@st.composite
def mutated_files(draw, original):
    file_bytes, (meta_bytes, weights) = original
    kind = draw(st.sampled_from(["delete", "rename", "retype", "number", "truncate", "flip", "pad"]))
    if kind == "truncate":
        return file_bytes[: draw(st.integers(0, len(file_bytes) - 1))]
    if kind == "flip":
        data = bytearray(file_bytes)
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "pad":
        padding = draw(st.sampled_from([b" ", b"\0", b"}", b"\n" * 1000]))
        if draw(st.booleans()):
            return _archive_bytes(meta_bytes + padding, weights)
        return _archive_bytes(meta_bytes, weights + padding)
    meta = json.loads(meta_bytes)
    path = draw(st.sampled_from(list(_paths(meta))))
    replacement = draw(st.sampled_from(_REPLACEMENTS))
    return _archive_bytes(json.dumps(_mutated_meta(meta, kind, path, replacement)), weights)


def test_every_mutated_file_loads_as_the_original_or_fails_clearly(saved_model, tmp_path):
    model, X, file_bytes, members = saved_model
    expected = model.predict_proba(X)
    path = tmp_path / "mutated.catvae"
    rss_before = _max_rss_bytes()

    @hypothesis.settings(max_examples=150, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(mutated_files((file_bytes, members)))
    def check(data):
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeviceWarning)
                loaded = InfoCatVAE.load(path)
        except ValueError as error:
            assert "mutated.catvae" in str(error)
        else:
            np.testing.assert_array_equal(loaded.predict_proba(X), expected)
        assert time.perf_counter() - start < 5

    check()
    assert _max_rss_bytes() - rss_before < 256 * 2**20
