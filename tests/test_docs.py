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
    reference = (html / "generated" / "catvae_sklearn.InfoCatVAE.html").read_text()
    assert "predict_proba" in reference and "n_clusters" in reference
    gallery = html / "auto_examples"
    examples = sorted(p.stem for p in (DOCS / "examples").glob("plot_*.py"))
    assert examples
    for name in examples:
        page = (gallery / f"{name}.html").read_text()
        # Each example ran: its figures were captured as images.
        assert "sphx_glr_" + name in page, name
