"""How many CPU threads a fit computes with.

A fit uses the threads it is given: torch's (which threadpoolctl's limits
and joblib's workers set), and no more than the cores the process may run
on. Of those it takes only the cores that other processes leave idle,
measured again at each epoch and phase from ``/proc/stat`` (as a fit
begins, counted from the threads running elsewhere at that moment). The
threads of an OpenMP runtime spin while they wait for work, so on a core
that another busy process shares, each of torch's parallel regions waits
for the scheduler, and two fits side by side, each with a thread per core,
run many times slower than one alone; with their threads shared out they
do not (the benchmarks page has the figures). Another number of threads
can reach another fit from the same seed (see the estimator's
``random_state``).
"""

import os
import threading
import time

from threadpoolctl import ThreadpoolController

import torch

# Shorter intervals than this say more about scheduling noise than load.
_MIN_INTERVAL = 0.2
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_active = threading.local()


def _usable_cpus():
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def _proc_stat():
    """The lines of ``/proc/stat`` by their first field (``cpu0``,
    ``procs_running``, ...); raises OSError where it cannot be read."""
    with open("/proc/stat") as stat:
        return {fields[0]: fields[1:] for fields in map(str.split, stat) if fields}


def _cpu_sample(cpus):
    """``(wall seconds, busy CPU seconds on cpus, this process's CPU seconds)``,
    or None where ``/proc/stat`` cannot be read."""
    try:
        lines = _proc_stat()
    except OSError:
        return None
    busy = 0
    for cpu in cpus:
        # user nice system idle iowait irq softirq steal (guest time is in user)
        values = [int(v) for v in lines.get(f"cpu{cpu}", [])[:8]]
        if len(values) < 5:
            return None
        busy += sum(values) - values[3] - values[4]
    own = os.times()
    return time.monotonic(), busy / _CLOCK_TICKS, own.user + own.system


def _running_elsewhere(cpus, reads=3):
    """Threads of other processes ready to run now: the machine's running
    count less this process's own running threads, the median of ``reads``
    readings of ``/proc``. None where that cannot be read, or where the
    process may not use every core of the machine (the count is the
    machine's)."""
    if len(cpus) != os.cpu_count():
        return None
    counts = []
    for _ in range(reads):
        try:
            running = int(_proc_stat()["procs_running"][0])
            tasks = os.listdir("/proc/self/task")
        except (OSError, KeyError, ValueError, IndexError):
            return None
        own = 0
        for task in tasks:
            try:
                with open(f"/proc/self/task/{task}/stat") as stat:
                    own += stat.read().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):  # the thread ended meanwhile
                continue
        counts.append(max(0, running - max(own, 1)))
    return sorted(counts)[len(counts) // 2]


class CoreShare:
    """The threads of one fit; see the module docstring. Use as a context
    manager: on exit every thread pool is set back as it was."""

    def __init__(self):
        self._cpus = _usable_cpus()
        self.given = max(1, min(torch.get_num_threads(), len(self._cpus)))
        self.threads = self.given
        self._controller, self._original = None, None
        self._sample = None

    def __enter__(self):
        self._torch_threads = torch.get_num_threads()
        # torch keeps a count of its own, which it applies to the OpenMP
        # runtime when a thread first runs a parallel operation: set it, so
        # that a limit threadpoolctl set is not undone inside the fit.
        torch.set_num_threads(self.given)
        self._sample = _cpu_sample(self._cpus)
        stack = getattr(_active, "stack", [])
        _active.stack = stack + [self]
        # The fit's first phase starts at once, before an interval could be
        # measured, and may run seconds (a t-SNE map) on cores another fit
        # keeps busy too: start from the threads running elsewhere now.
        others = _running_elsewhere(self._cpus) if self.given > 1 else None
        if others is not None:
            self._take(others)
        return self

    def __exit__(self, *exc):
        _active.stack = _active.stack[:-1]
        if self._original is not None:
            self._original.restore_original_limits()
        torch.set_num_threads(self._torch_threads)

    def rebalance(self):
        """Take the cores other processes left idle since the last call."""
        sample = _cpu_sample(self._cpus)
        if self.given == 1 or sample is None or self._sample is None:
            return
        wall = sample[0] - self._sample[0]
        if wall < _MIN_INTERVAL:
            return
        others = max(0.0, (sample[1] - self._sample[1]) - (sample[2] - self._sample[2])) / wall
        self._sample = sample
        self._take(others)

    def _take(self, others):
        """Compute with the cores that ``others`` (busy cores or running
        threads of other processes) leave, at least one."""
        threads = max(1, min(self.given, round(len(self._cpus) - others)))
        if threads != self.threads:
            self.threads = threads
            if self._controller is None:
                self._controller = ThreadpoolController()
            # The BLAS and OpenMP pools of numpy and scikit-learn's steps; the
            # first change remembers them as the fit found them.
            limiter = self._controller.limit(limits=threads)
            self._original = self._original or limiter
            torch.set_num_threads(threads)


def rebalance():
    """Let the innermost fit in progress on this thread re-measure its share."""
    stack = getattr(_active, "stack", [])
    if stack:
        stack[-1].rebalance()
