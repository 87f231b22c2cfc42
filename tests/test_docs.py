"""The documentation builds without warnings, and documents every command."""
import subprocess
import sys
from pathlib import Path

import datalad_registry_ext

DOCS = Path(__file__).resolve().parents[1] / "docs" / "source"


def test_sphinx_builds_without_warnings(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(DOCS),
         str(tmp_path / "html")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reference = (tmp_path / "html" / "commands.html").read_text()
    for _, _, cli_name, py_name in datalad_registry_ext.command_suite[1]:
        assert py_name in reference, py_name
        assert cli_name in (DOCS / "commands.rst").read_text(), cli_name


def test_every_command_has_examples_and_documented_parameters():
    import importlib
    for module, cls_name, _, _ in datalad_registry_ext.command_suite[1]:
        cls = getattr(importlib.import_module(module), cls_name)
        assert cls.__doc__ and cls._examples_, cls_name
        for name, param in cls._params_.items():
            assert param._doc and len(param._doc) > 20, (cls_name, name)
