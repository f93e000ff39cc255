"""Where a default fit spends its time, beside the pipelines users would try instead.

In one run, on the same data:

- (without ``--grid`` or ``--rows``) a default InfoCatVAE fit, phase by phase (its ``phase_seconds_``:
  autoencoder, map, mixture, training), against PCA -> openTSNE ->
  GaussianMixture and PCA -> UMAP -> GaussianMixture, with the ratio of
  their times (medians of ``--repeats`` fits each, taken in turn);
- ``--grid``: ``GridSearchCV`` over 3 values of ``n_clusters`` x 2 of
  ``subspace_dim`` with ``cv=3`` and ``memory`` set, against one default fit
  (each in a fresh process; a fit before and after each search);
- ``--side-by-side``: two default fits running at once in two processes,
  against one alone (medians of ``--repeats`` rounds);
- ``--rows N``: a default fit on N rows of MNIST images shifted by up to 2
  pixels, with its peak memory (run in a fresh process) and accuracy.

Writes ``benchmarks/results/fit_time_<datasets>[_grid][_<N>_rows].md``.

    python benchmarks/fit_time.py --datasets digits mnist --side-by-side
    python benchmarks/fit_time.py --datasets mnist --grid --repeats 2
    python benchmarks/fit_time.py --datasets mnist --rows 100000
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_MNIST_DIR, header_markdown, markdown_table, write_result  # noqa: E402
from accuracy import ManifoldMixture, load  # noqa: E402

from catvae_sklearn import InfoCatVAE  # noqa: E402
from catvae_sklearn.metrics import cluster_accuracy_score  # noqa: E402

PHASES = ("autoencoder", "map", "mixture", "training")


def timed_fit(estimator, X):
    start = time.perf_counter()
    labels = estimator.fit_predict(X)
    return time.perf_counter() - start, labels


_PEERS = {"tsne": "PCA -> openTSNE -> GaussianMixture",
          "umap": "PCA -> UMAP(10-D) -> GaussianMixture"}


def phase_section(datasets, mnist_dir, repeats):
    """Each method fitted ``repeats`` times, in turn (ours, then each peer,
    then ours again), so that a slow minute on a shared machine falls on all
    of them; medians of the times and of each phase, accuracy of the first fit."""
    rows = []
    for name in datasets:
        X, y, _ = load(name, mnist_dir)
        K = len(np.unique(y))
        ManifoldMixture(K, "umap", 0).fit(X[:500])  # compiles UMAP's numba code
        times = {method: [] for method in ("ours", *_PEERS)}
        phases, accuracy = [], {}
        for _ in range(repeats):
            ours = InfoCatVAE(K, random_state=0)
            seconds, labels = timed_fit(ours, X)
            times["ours"].append(seconds)
            phases.append(ours.phase_seconds_)
            accuracy.setdefault("ours", cluster_accuracy_score(y, labels))
            for peer in _PEERS:
                seconds, labels = timed_fit(ManifoldMixture(K, peer, 0), X)
                times[peer].append(seconds)
                accuracy.setdefault(peer, cluster_accuracy_score(y, labels))
        ours_seconds = float(np.median(times["ours"]))
        phase_medians = [float(np.median([p.get(phase, 0.0) for p in phases])) for phase in PHASES]
        other = float(np.median([t - sum(p.values()) for t, p in zip(times["ours"], phases)]))
        rows.append([name, "InfoCatVAE (defaults)", f"{ours_seconds:.1f}", "1.00",
                     f"{accuracy['ours']:.3f}"]
                    + [f"{m:.1f}" for m in phase_medians] + [f"{other:.1f}"])
        for peer, title in _PEERS.items():
            seconds = float(np.median(times[peer]))
            rows.append([name, title, f"{seconds:.1f}", f"{seconds / ours_seconds:.2f}",
                         f"{accuracy[peer]:.3f}"] + [""] * 5)
    header = ["data", "method", "fit s", "time / InfoCatVAE's", "accuracy",
              *(f"{p} s" for p in PHASES), "rest s"]
    return (f"## A default fit, phase by phase\n\nSeed 0; medians of {repeats} fits of each "
            "method, taken in turn. UMAP's numba code is compiled beforehand. `rest` is "
            "validation, the data's scaling and the final predict.\n\n"
            + markdown_table(header, rows))


def grid_section(name, mnist_dir, repeats):
    """The search and one default fit, each in a fresh process (so each pays
    the same one-time costs: imports, kernel compilation): a fit, then
    ``repeats`` rounds of a search and a fit; medians of each."""
    singles, searches = [_result(_child(name, mnist_dir))["seconds"]], []
    for _ in range(repeats):
        searches.append(_result(_child(name, mnist_dir, grid=True)))
        singles.append(_result(_child(name, mnist_dir))["seconds"])
    one_fit = float(np.median(singles))
    grid = float(np.median([search["seconds"] for search in searches]))

    def each(times):
        return ", ".join(f"{t:.1f}" for t in times)

    rows = [["one default fit", f"{one_fit:.1f} ({each(singles)})", "1.00"],
            ["GridSearchCV, 3 n_clusters x 2 subspace_dim, cv=3 (18 fits + refit), memory set",
             f"{grid:.1f} ({each(s['seconds'] for s in searches)})", f"{grid / one_fit:.2f}"]]
    best = "; ".join(f"`{search['best_params']}`" for search in searches)
    return (f"## A grid search on {name}\n\nEach run in a fresh process: a fit, then "
            f"{repeats} rounds of a search and a fit; medians, each run in brackets. "
            f"Best parameters: {best}.\n\n"
            + markdown_table(["run", "seconds", "ratio to one fit"], rows))


_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from accuracy import load
from catvae_sklearn import InfoCatVAE
from catvae_sklearn.metrics import cluster_accuracy_score
name, mnist_dir, rows, grid = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "grid"
X, y, _ = load(name, mnist_dir)
if rows:
    # New rows like the data: MNIST images shifted by up to 2 pixels.
    rng = np.random.RandomState(0)
    picks = rng.randint(len(X), size=rows)
    images = X.reshape(-1, 28, 28)[picks]
    shifts = rng.randint(-2, 3, size=(rows, 2))
    X = np.stack([np.roll(image, tuple(s), axis=(0, 1)) for image, s in zip(images, shifts)])
    X, y = X.reshape(rows, -1).astype(np.float32), y[picks]
if grid:
    import tempfile
    from sklearn.model_selection import GridSearchCV
    with tempfile.TemporaryDirectory() as cache:
        search = GridSearchCV(InfoCatVAE(random_state=0, memory=cache),
                              {"n_clusters": [8, 10, 12], "subspace_dim": [2, 4]}, cv=3)
        start = time.perf_counter()
        search.fit(X)
        print(json.dumps({"seconds": time.perf_counter() - start,
                          "best_params": search.best_params_}))
    sys.exit()
start = time.perf_counter()
model = InfoCatVAE(len(np.unique(y)), random_state=0).fit(X)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "phases": model.phase_seconds_,
                  "accuracy": cluster_accuracy_score(y, model.labels_),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "data_mib": X.astype(np.float32).nbytes / 2**20}))
"""


def _child(name, mnist_dir, rows=0, grid=False):
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.Popen([sys.executable, "-c", _CHILD, here, name, mnist_dir, str(rows),
                             "grid" if grid else "fit"],
                            stdout=subprocess.PIPE, text=True)


def _result(process):
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"a benchmark fit failed (exit {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def side_by_side_section(name, mnist_dir, repeats):
    """One fit alone, then two at once, ``repeats`` times in turn; medians."""
    alone_times, together = [], [[], []]
    for _ in range(repeats):
        alone_times.append(_result(_child(name, mnist_dir))["seconds"])
        pair = [_child(name, mnist_dir), _child(name, mnist_dir)]
        for seconds, process in zip(together, pair):
            seconds.append(_result(process)["seconds"])
    alone = float(np.median(alone_times))
    rows = [["one fit alone", f"{alone:.1f}", "1.00"]] + [
        [f"fit {i + 1} of two at once", f"{s:.1f}", f"{s / alone:.2f}"]
        for i, s in enumerate(float(np.median(t)) for t in together)]
    return (f"## Two fits side by side on {name}\n\nEach a process of its own with torch's "
            f"default threads ({os.cpu_count()} cores here); medians of {repeats} rounds of "
            "one fit alone, then two at once.\n\n"
            + markdown_table(["run", "seconds", "ratio to alone"], rows))


def scale_section(rows, mnist_dir):
    result = _result(_child("mnist", mnist_dir, rows))
    phases = result["phases"]
    table = markdown_table(
        ["rows", "fit s", "accuracy", *(f"{p} s" for p in PHASES), "peak RSS MiB",
         "float32 data MiB"],
        [[f"{rows:,}", f"{result['seconds']:.0f}", f"{result['accuracy']:.3f}",
          *(f"{phases.get(p, 0.0):.0f}" for p in PHASES), f"{result['peak_mib']:.0f}",
          f"{result['data_mib']:.0f}"]])
    return ("## Scale: MNIST images shifted by up to 2 pixels\n\nOne default fit in a fresh "
            "process; peak RSS is the whole process's.\n\n" + table)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits"],
                        choices=["digits", "mnist", "mnist_2000", "mnist_5000"])
    parser.add_argument("--grid", action="store_true")
    parser.add_argument("--side-by-side", action="store_true")
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits of each method in the phase table, rounds of the "
                             "side-by-side run, and searches in the grid run (medians)")
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR)
    args = parser.parse_args(argv)
    # --grid and --rows are long runs of their own; the phase table comes without them.
    sections = ([] if args.grid or args.rows
                else [phase_section(args.datasets, args.mnist_dir, args.repeats)])
    if args.side_by_side:
        sections.append(side_by_side_section(args.datasets[0], args.mnist_dir, args.repeats))
    if args.grid:
        sections.append(grid_section(args.datasets[-1], args.mnist_dir, args.repeats))
    if args.rows:
        sections.append(scale_section(args.rows, args.mnist_dir))
    text = header_markdown("Fit time") + "\n" + "\n\n".join(sections) + "\n"
    print(text)
    name = "fit_time_" + "_".join(args.datasets) + ("_grid" if args.grid else "")
    name += f"_{args.rows}_rows" if args.rows else ""
    print("written to", write_result(name + ".md", text))


if __name__ == "__main__":
    main()
