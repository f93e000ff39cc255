"""Sphinx configuration: API reference from the numpydoc docstrings and a
gallery of runnable examples (sphinx-gallery) executed at every build."""

import os
import sys
import warnings

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("."))

import catvae_sklearn  # noqa: E402
from _results import write_results_pages  # noqa: E402

# The benchmarks page includes every file of benchmarks/results/, converted
# to reST at each build, so its figures are the files' own.
write_results_pages()

project = "catvae_sklearn"
author = "catvae_sklearn developers"
copyright = "2026, catvae_sklearn developers"
release = version = catvae_sklearn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

# No network at build time: intersphinx only resolves from a local cache, so
# it is given no remote inventories.
intersphinx_mapping = {}

autosummary_generate = True
autodoc_default_options = {"members": True, "exclude-members": "__init__"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

templates_path = []
exclude_patterns = ["_build", "examples/README.rst", "results/*.rst"]
html_theme = "alabaster"
html_static_path = []

# Examples run headless.
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", category=UserWarning, message="Matplotlib is currently using agg")

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "show_memory": False,
    # Every build runs every example, so the build checks they still work.
    "run_stale_examples": True,
}
