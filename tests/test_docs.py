"""The documentation builds, gallery included, with warnings as errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")
pytest.importorskip("sphinx_gallery")
pytest.importorskip("matplotlib")

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    html = tmp_path / "html"
    assert (html / "api.html").exists()
    benchmarks = (html / "benchmarks.html").read_text()
    assert "benchmarks.html" in (html / "index.html").read_text()  # in the toctree
    assert "<table" in benchmarks and "benchmarks/accuracy.py" in benchmarks
    reference = (html / "generated" / "catvae_sklearn.InfoCatVAE.html").read_text()
    assert "predict_proba" in reference and "n_clusters" in reference
    gallery = html / "auto_examples"
    examples = sorted(p.stem for p in (DOCS / "examples").glob("plot_*.py"))
    assert examples
    for name in examples:
        page = (gallery / f"{name}.html").read_text()
        # Each example ran: its figures were captured as images.
        assert "sphx_glr_" + name in page, name


RESULTS = DOCS.parent / "benchmarks" / "results"


def test_every_results_file_is_on_the_benchmarks_page_with_its_command_and_machine():
    page = (DOCS / "benchmarks.rst").read_text()
    files = sorted(RESULTS.glob("*.md"))
    assert files
    for path in files:
        assert f".. include:: results/{path.stem}.rst" in page, path.name
        text = path.read_text()
        for field in ("date", "command", "machine"):
            assert f"- **{field}**:" in text, (path.name, field)
        script = text.split("- **command**: `", 1)[1].split("`", 1)[0].split()[1]
        assert (DOCS.parent / script).exists(), (path.name, script)
