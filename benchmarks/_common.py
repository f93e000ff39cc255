"""What every benchmark records next to its numbers: machine, versions, command."""

import datetime
import os
import platform
import subprocess
import sys

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MNIST_DIR = os.path.join(REPO_ROOT, "..", "shared", "data")


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit():
    """The checkout's commit, with "+ local changes" where the package or the
    benchmark scripts differ from it; None outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", "catvae_sklearn", "benchmarks",
                      ":(exclude)benchmarks/results")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit} + local changes" if changed else commit


def environment():
    import numpy
    import scipy
    import sklearn
    import torch

    import catvae_sklearn

    lines = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "commit": _commit(),
        "machine": f"{_cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}",
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "catvae_sklearn": catvae_sklearn.__version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }
    if lines["commit"] is None:
        del lines["commit"]
    if torch.cuda.is_available():
        lines["gpu"] = torch.cuda.get_device_name(0)
    return lines


def header_markdown(title):
    env = environment()
    rows = "\n".join(f"- **{k}**: `{v}`" if k == "command" else f"- **{k}**: {v}" for k, v in env.items())
    return f"# {title}\n\n{rows}\n"


def publish(title, intro, table, filename, save=True):
    """Print ``table``; with ``save``, write it to ``results/filename`` under
    the machine and versions, ``title`` and the paragraph ``intro``."""
    print(table)
    if save:
        text = header_markdown(title) + f"\n{intro}\n\n{table}\n"
        print(f"\nwritten to {write_result(filename, text)}")


def write_result(filename, text):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, filename)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def markdown_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
