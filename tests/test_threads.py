"""A fit's CPU threads: those it is given, less the cores other processes keep busy."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from catvae_sklearn import InfoCatVAE
from catvae_sklearn import _threads, _training

from ._helpers import QUICK, digits


@pytest.fixture
def threads_seen(monkeypatch):
    """torch's thread count at each training step of the fits that follow."""
    seen = []
    step = _training.training_step

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return step(*args, **kwargs)

    monkeypatch.setattr(_training, "training_step", recording)
    return seen


def test_a_fit_keeps_to_the_threads_it_is_given(threads_seen):
    X, _ = digits(200)
    before = torch.get_num_threads()
    with threadpool_limits(limits=1):
        InfoCatVAE(3, device="cpu", **QUICK).fit(X)
    assert threads_seen and set(threads_seen) == {1}
    assert torch.get_num_threads() == before


class _FakeMachine:
    """/proc/stat as it would read with ``others`` cores kept busy by other
    processes (and none by this one): each sample is a second later."""

    def __init__(self, others):
        self.others, self.now, self.busy = others, 0.0, 0.0

    def __call__(self, cpus):
        self.now += 1.0
        self.busy += self.others
        return self.now, self.busy, 0.0


@pytest.mark.parametrize("others, expected", [(0.0, 2), (0.4, 2), (1.0, 1), (1.9, 1)])
def test_a_fit_takes_only_the_cores_other_processes_leave_idle(
    monkeypatch, threads_seen, others, expected
):
    monkeypatch.setattr(_threads, "_usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(_threads, "_cpu_sample", _FakeMachine(others))
    X, _ = digits(200)
    with threadpool_limits(limits=2):
        model = InfoCatVAE(3, device="cpu", **QUICK).fit(X)
        assert torch.get_num_threads() == 2  # set back after the fit
    assert set(threads_seen) == {expected}
    assert np.isfinite(model.score(X))


def test_the_share_is_measured_again_as_the_load_changes(monkeypatch):
    monkeypatch.setattr(_threads, "_usable_cpus", lambda: [0, 1])
    machine = _FakeMachine(1.5)
    monkeypatch.setattr(_threads, "_cpu_sample", machine)
    with threadpool_limits(limits=2):
        with _threads.CoreShare() as share:
            _threads.rebalance()
            assert (share.threads, torch.get_num_threads()) == (1, 1)
            machine.others = 0.0  # the other process ended
            _threads.rebalance()
            assert (share.threads, torch.get_num_threads()) == (2, 2)
        assert torch.get_num_threads() == 2


class _Instant:
    """/proc/stat sampled a few milliseconds apart: too soon for a load."""

    def __init__(self):
        self.now = 0.0

    def __call__(self, cpus):
        self.now += 0.005
        return self.now, 0.0, 0.0


@pytest.mark.parametrize("elsewhere, expected", [(0, 2), (1, 1), (3, 1)])
def test_a_fit_starts_from_the_threads_running_elsewhere(monkeypatch, elsewhere, expected):
    monkeypatch.setattr(_threads, "_usable_cpus", lambda: [0, 1])
    monkeypatch.setattr(_threads, "_cpu_sample", _Instant())
    counted = []
    monkeypatch.setattr(_threads, "_running_elsewhere",
                        lambda cpus: counted.append(cpus) or elsewhere)
    with threadpool_limits(limits=2):
        with _threads.CoreShare() as share:
            _threads.rebalance()
            assert share.threads == expected
            _threads.rebalance()  # later phases wait for an interval to measure
    assert len(counted) == 1


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc")
def test_a_busy_process_counts_as_running_elsewhere():
    cpus = _threads._usable_cpus()
    if len(cpus) != os.cpu_count():
        assert _threads._running_elsewhere(cpus) is None
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert _threads._running_elsewhere(cpus) >= 1
    finally:
        busy.kill()
        busy.wait()
