"""Sphinx configuration for datalad-registry-ext."""
import datetime

import datalad_registry_ext

project = "datalad-registry-ext"
author = "The datalad-registry-ext developers"
copyright = f"{datetime.date.today().year}, {author}"
version = release = datalad_registry_ext.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]
autodoc_member_order = "bysource"
templates_path = []
exclude_patterns = []
html_theme = "alabaster"
