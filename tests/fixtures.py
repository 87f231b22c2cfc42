"""Helpers and data for the tests: real repositories (DataLad datasets, plain
git), HTTP, isolated user directories, and the metadata files of the
extraction tests.

Plain functions and constants only; the fixtures built from them live in
``conftest.py`` so that each is one fixture, built once.
"""
from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
from pathlib import Path

from datalad.api import create


def run(*args, cwd=None, check=True) -> str:
    return subprocess.run(args, cwd=cwd, check=check, capture_output=True,
                          text=True).stdout


def set_user_dirs(monkeypatch, root: Path) -> None:
    """Point platformdirs (XDG_* on Linux) at directories under ``root``,
    so nothing touches the real user data/cache/config dirs."""
    root = Path(root)
    monkeypatch.setenv("XDG_DATA_HOME", str(root / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "xdg-config"))
    monkeypatch.delenv("DATALAD_REGISTRY_DATASET", raising=False)


def write_files(root, files: dict) -> None:
    """Write ``{relative path: str or bytes}`` under ``root``."""
    for rel, content in files.items():
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(path, mode) as f:
            f.write(content)


# what DataLad's cfg_text2git procedure configures: text files go to git
TEXT2GIT = "* annex.largefiles=((mimeencoding=binary)and(largerthan=0))\n"


def make_dataset(path, files: dict | None = None, *, annex: bool = True,
                 to_git: bool = False, subdatasets=(), tag: str | None = None,
                 message: str = "add content"):
    """A real DataLad dataset holding ``files``, saved in one commit.

    By default every file is annexed (DataLad's default); ``to_git=True``
    puts text files into git and annexes binary ones (what ``datalad create
    -c text2git`` configures, written directly: running the procedure costs
    a second or two per dataset). ``annex=False`` makes a dataset without
    git-annex. ``subdatasets`` are created at those paths, ``tag`` is an
    annotated tag on the result.
    """
    path = Path(path)
    ds = create(path=str(path), annex=annex, result_renderer="disabled")
    if to_git:
        with open(path / ".gitattributes", "a") as f:
            f.write(TEXT2GIT)
    write_files(path, files or {})
    for sub in subdatasets:
        ds.create(sub, result_renderer="disabled")
    ds.save(message=message, result_renderer="disabled")
    if tag:
        run("git", "tag", "-a", "-m", tag, tag, cwd=path)
    return ds


def copy_dataset(ds, path):
    """An independent copy of a dataset (same id and commits) at ``path``,
    for a test that changes a dataset other tests share."""
    import shutil

    from datalad.api import Dataset
    shutil.copytree(ds.path, path, symlinks=True)
    return Dataset(str(path))


def make_git_repo(path, files: dict | None = None,
                  bare_copy: Path | None = None) -> Path:
    """A plain git repository (no annex, no DataLad id) with one commit;
    ``bare_copy``: also a bare clone there, ready for git's dumb HTTP."""
    path = Path(path)
    path.mkdir(parents=True)
    run("git", "init", "-q", cwd=path)
    write_files(path, files or {"README": "plain"})
    run("git", "add", ".", cwd=path)
    run("git", "commit", "-q", "-m", "initial", cwd=path)
    if bare_copy:
        run("git", "clone", "-q", "--bare", str(path), str(bare_copy))
        run("git", "update-server-info", cwd=bare_copy)
    return path


def annex_info(path: Path) -> dict:
    out = run("git", "annex", "info", "--bytes", "--json", ".", cwd=path)
    return json.loads(out.splitlines()[0])


def read_jsonl_gz(path) -> list[dict]:
    """The records of a (gzipped) JSON Lines file, read plainly."""
    import gzip
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class HTTPServer:
    """Serve a directory on 127.0.0.1 (git's dumb HTTP protocol works)."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# -- metadata files of the extraction tests ------------------------------------------

RFC822 = """\
Name: studyforrest_phase2
License: CC0-1.0
 The person who associated a work with this deed has dedicated the work
 to the public domain.
Author: Mike One <mike@example.com>, Anna Two <anna@example.com>
Homepage: http://studyforrest.org
DOI: 10.5281/zenodo.48421
Description: Basic summary
 A text with arbitrary length.
"""

DATASET_DESCRIPTION = {
    "Name": "A test BIDS dataset",
    "BIDSVersion": "1.6.0",
    "DatasetType": "raw",
    "License": "CC0",
    "Authors": ["Jane Doe", "John Roe"],
    "DatasetDOI": "10.0000/test",
}

PARTICIPANTS = "participant_id\tage\tsex\nsub-01\t30\tF\nsub-02\t41\tM\n"

DATACITE = """\
authors:
  - firstname: "Jane"
    lastname: "Doe"
    affiliation: "Some University"
    id: "ORCID:0000-0001-0002-0003"
title: "A dataset title"
description: |
  A longer description of the dataset.

keywords:
  - neuroscience
  - test
license:
  name: "Creative Commons CC0 1.0 Public Domain Dedication"
  url: "https://creativecommons.org/publicdomain/zero/1.0/"
funding:
  - "DFG, XY 123/4-5"
references:
  - id: "doi:10.1234/abc"
    reftype: "IsSupplementTo"
    citation: "Doe J (2020) A paper."
resourcetype: Dataset
templateversion: 1.2
"""

DATAPACKAGE = {
    "name": "test-package",
    "title": "A test data package",
    "description": "Data package description",
    "keywords": ["alpha", "beta"],
    "version": "1.0.0",
    "homepage": "https://example.com/pkg",
    "author": {"name": "Jane Doe", "email": "jane@example.com"},
    "license": {"type": "CC-BY-4.0"},
}

STUDYMINIMETA = """\
study:
  name: An example study
  purpose: a short description of the study
  principal_investigator: a@example.com
  keyword: [k1, k2]
  funding: [DFG]
  contributor: [a@example.com, b@example.com]
  start_date: 01.01.2020
  end_date: 02.02.2020
dataset:
  name: Dataset for an example study
  location: http://example.com/datalad/example_study
  description: Data that was collected to prove something
  author: [a@example.com, b@example.com]
  keywords: [d_k1, d_k2]
  standard: [dicom, ebdsi]
  funding: [DFG]
person:
  a@example.com:
    given_name: Alex
    last_name: Meyer
    orcid-id: 0000-0001-0002-0033
    title: Prof. Dr.
    contact_information: Corner broadway and main
    affiliation: Big Old University
  b@example.com:
    given_name: Bernd
    last_name: Muller
    orcid-id: 0000-0001-0002-0034
    title: MD
    contact_information: central plaza
    affiliation: RRU-SSLT
publication:
  - title: Publication Numero Unos
    year: 2001
    author: [a@example.com, b@example.com]
    doi: doi:1112-23232-0
    volume: 30
    issue: 4
    pages: 1-1200
    publisher: Renato
"""

DANDISET = """\
identifier: DANDI:000027
name: test-dandi-ds
description: A DANDI test set
license:
  - spdx:CC-BY-4.0
contributor:
  - name: Doe, Jane
    roleName: [dcite:ContactPerson]
schemaVersion: 0.6.4
"""

FULL_FILES = {
    ".datalad/meta.rfc822": RFC822,
    "dataset_description.json": json.dumps(DATASET_DESCRIPTION, indent=2),
    "participants.tsv": PARTICIPANTS,
    "README.md": "# A test dataset\n\nWith a README.\n",
    "sub-01/anat/sub-01_T1w.nii.gz": "t1-01",
    "sub-02/anat/sub-02_T1w.nii.gz": "t1-02",
    "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_run-1_bold.nii.gz": "b1",
    "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_run-2_bold.nii.gz": "b2",
    "task-rest_bold.json": '{"RepetitionTime": 2}',
    "derivatives/sub-99/anat/sub-99_T1w.nii.gz": "ignored",
    "datacite.yml": DATACITE,
    "datapackage.json": json.dumps(DATAPACKAGE, indent=2),
    ".studyminimeta.yaml": STUDYMINIMETA,
    "dandiset.yaml": DANDISET,
}

# Billion laughs: 9 levels of 9 aliases -> 9**9 nodes when expanded.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9)
    + "]\n" for i in range(8))


def call(cmd, *args, **kw):
    """A registry-* command through the Python API: its results as a list,
    never raising for an error result."""
    kw.setdefault("result_renderer", "disabled")
    kw.setdefault("on_failure", "ignore")
    kw.setdefault("return_type", "list")
    return cmd(*args, **kw)


def record(registry, url):
    """The index record of ``url`` in a registry's own index."""
    from datalad_registry_ext.index import local_index
    (rec,) = [r for r in local_index(registry).records() if r["url"] == url]
    return rec
