"""Register on push (``registry-on-push``): a DataLad result hook, run by
real ``datalad push`` calls (in Python and on the command line) to local
bare siblings, registering in a local registry or submitting to a real
``registry-serve --allow-submit``.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
import requests
from datalad.api import registry_on_push, registry_sync

from datalad_registry_ext import hooks
from datalad_registry_ext.index import local_index
from datalad_registry_ext.locations import default_registry_path
from datalad_registry_ext.registry import head_commit

from .fixtures import HTTPServer, call, make_dataset, run, write_files
from .test_federation import Served, free_port


def bare_sibling(ds, path: Path, name: str = "pub", url: str | None = None):
    """A bare repository at ``path``, added as the sibling ``name`` of
    ``ds`` (its URL ``url``, pushed to at ``path``); it keeps the files
    of git's dumb HTTP protocol up to date after each push."""
    run("git", "init", "-q", "--bare", str(path))
    hook = path / "hooks" / "post-update"
    hook.write_text("#!/bin/sh\nexec git update-server-info\n")
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    kw = dict(pushurl=str(path)) if url else {}
    ds.siblings("add", name=name, url=url or str(path),
                result_renderer="disabled", **kw)
    return path


def push(ds, to="pub"):
    return ds.push(to=to, result_renderer="disabled", on_failure="ignore",
                   return_type="list")


def commit(ds, name: str, content: str = "x"):
    write_files(ds.path, {name: content})
    ds.save(message=f"add {name}", result_renderer="disabled")
    return ds.repo.get_hexsha()


def cli_push(ds, *args, cwd=None):
    """``datalad -f json push ...`` as a user runs it."""
    return subprocess.run(["datalad", "-f", "json", "push", *args],
                          cwd=cwd or ds.path, capture_output=True, text=True)


def registered(registry: Path) -> dict[str, str]:
    """URL -> registered HEAD."""
    if not local_index(registry).exists():
        return {}
    return {r["url"]: r["head"] for r in local_index(registry).records()}


def of(results, action):
    return [r for r in results if r.get("action") == action]


def test_each_push_registers_the_sibling_until_off(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"a.dat": "abc"})
    sib = bare_sibling(ds, tmp_path / "sib.git")
    reg = tmp_path / "reg"

    (res,) = call(registry_on_push, dataset=ds.path, registry=str(reg))
    assert res["status"] == "ok" and str(reg) in res["message"]
    assert hooks.installed(Path(ds.path))["match"]
    # nothing is registered by installing
    assert not reg.exists()

    results = push(ds)
    publish = of(results, "publish")
    assert publish and all(r["status"] == "ok" for r in publish)
    # one registration, although push reports two refs (branch, git-annex)
    (done,) = of(results, "registry_submit")
    assert (done["status"], done["change"], done["url"]) == \
        ("ok", "new", str(sib))
    assert [r["status"] for r in of(results, "registry_on_push")] == \
        ["notneeded"]
    # the metadata was extracted, as registry-submit does
    assert of(results, "registry_extract")
    assert registered(reg) == {str(sib): ds.repo.get_hexsha()}

    # the next push brings the record up to date
    head = commit(ds, "b.dat")
    (done,) = of(push(ds), "registry_submit")
    assert (done["status"], done["change"]) == ("ok", "updated")
    assert registered(reg) == {str(sib): head}

    # --off: a push submits nothing, the registry stays as it was
    (res,) = call(registry_on_push, dataset=ds.path, off=True)
    assert res["status"] == "ok"
    assert hooks.installed(Path(ds.path)) is None
    assert "result-hook" not in (Path(ds.path) / ".git" / "config").read_text()
    (res,) = call(registry_on_push, dataset=ds.path, off=True)
    assert res["status"] == "notneeded"
    reg_head = head_commit(reg)
    commit(ds, "c.dat")
    results = push(ds)
    assert of(results, "publish")
    assert not of(results, "registry_submit") and \
        not of(results, "registry_on_push")
    assert head_commit(reg) == reg_head and registered(reg) == {str(sib): head}


def test_a_failing_hook_never_breaks_the_push_nor_leaks(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"a.dat": "abc"})
    sib = bare_sibling(ds, tmp_path / "sib.git")
    # a "registry" that cannot be one: a file
    not_a_registry = tmp_path / "a-file"
    not_a_registry.write_text("not a registry")
    call(registry_on_push, dataset=ds.path, registry=str(not_a_registry))

    proc = cli_push(ds, "-d", ds.path, "--to", "pub")
    assert proc.returncode == 0, proc.stderr
    # the push happened, and -f json stays JSON: the hook renders nothing
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["action"] for r in lines} <= {"publish", "copy"}
    # (the first push to a fresh bare repository has a copy result "not an
    # annex remote yet": DataLad's, not the hook's)
    publish = [r for r in lines if r["action"] == "publish"]
    assert publish and all(r["status"] == "ok" for r in publish), lines
    assert run("git", "rev-parse", "HEAD", cwd=sib).strip() == \
        ds.repo.get_hexsha()
    # what went wrong is logged
    assert "registry-on-push" in proc.stderr
    assert f"{not_a_registry} exists and is not a dataset" in proc.stderr

    # a sibling URL with credentials (pushed to through its pushurl) is
    # never submitted to a service (which would publish it), nor shown
    # (git config: ``siblings configure`` would ask git-annex to enable
    # the unreachable URL; --data nothing: git-annex copies to the URL, not
    # to the pushurl)
    run("git", "config", "remote.pub.pushurl", str(sib), cwd=ds.path)
    run("git", "config", "remote.pub.url",
        "https://user:s3cret@example.invalid/ds", cwd=ds.path)
    call(registry_on_push, dataset=ds.path,
         to=f"http://127.0.0.1:{free_port()}")
    commit(ds, "b.dat")
    proc = cli_push(ds, "-d", ds.path, "--to", "pub", "--data", "nothing")
    assert proc.returncode == 0, proc.stderr
    assert "carries credentials" in proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    assert run("git", "rev-parse", "HEAD", cwd=sib).strip() == \
        ds.repo.get_hexsha()

    # a sibling without a URL: a warning, not a failure (run directly, as
    # the hook would be)
    res = call(registry_on_push, dataset=ds.path, sibling="nosuch")
    assert [r["status"] for r in res] == ["impossible"]
    assert "has no URL" in res[0]["message"]


def test_global_hook_runs_for_a_plain_push_of_its_dataset_only(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"a.dat": "abc"})
    other = make_dataset(tmp_path / "other", {"o.dat": "xyz"})
    sib = bare_sibling(ds, tmp_path / "sib.git")
    bare_sibling(other, tmp_path / "other.git")
    reg = tmp_path / "reg"
    (res,) = call(registry_on_push, dataset=ds.path, registry=str(reg),
                  global_=True)
    try:
        assert res["status"] == "ok"
        assert "result-hook" not in \
            (Path(ds.path) / ".git" / "config").read_text()
        # the way users push: no -d, from a subdirectory
        (Path(ds.path) / "sub").mkdir()
        proc = cli_push(ds, "--to", "pub", cwd=Path(ds.path) / "sub")
        assert proc.returncode == 0, proc.stderr
        assert registered(reg) == {str(sib): ds.repo.get_hexsha()}
        # another dataset's push does not match the hook
        proc = cli_push(other, "--to", "pub")
        assert proc.returncode == 0, proc.stderr
        assert list(registered(reg)) == [str(sib)]
    finally:
        (res,) = call(registry_on_push, dataset=ds.path, global_=True,
                      off=True)
    assert res["status"] == "ok"
    assert hooks.installed(Path(ds.path), "global") is None
    reg_head = head_commit(reg)
    commit(ds, "b.dat")
    assert cli_push(ds, "--to", "pub").returncode == 0
    assert head_commit(reg) == reg_head


@pytest.fixture
def service(tmp_path):
    """A real registry-serve --allow-submit (its registry holds one
    record)."""
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps({"url": "https://one.example.org/ds",
                               "processed": True}) + "\n")
    registry = tmp_path / "served"
    assert call(registry_sync, str(src),
                dataset=str(registry))[-1]["status"] == "ok"
    server = Served(registry, allow_submit=True)
    yield server
    server.stop()


def served_record(service, url: str, head: str, timeout: float = 90):
    """The service's record of ``url`` once it has registered ``head``
    (registration runs in the background), else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = requests.get(service.url + "/api/v2/dataset-urls",
                            params={"search": f'url:"{url}"'},
                            timeout=10).json()
        for rec in page["dataset_urls"]:
            if rec["url"] == url and rec.get("head") == head:
                return rec
        time.sleep(0.5)
    return None


def test_push_submits_to_a_service(tmp_path, service):
    root = tmp_path / "web"
    root.mkdir()
    ds = make_dataset(tmp_path / "ds", {"a.dat": "abc"})
    with HTTPServer(root) as web:
        # published as the web sees it, pushed to on this machine
        url = f"{web.url}/sib.git"
        bare_sibling(ds, root / "sib.git", url=url)
        (res,) = call(registry_on_push, dataset=ds.path,
                      to=service.url + "/api/v2")
        assert res["status"] == "ok" and res["to"] == service.url

        results = push(ds)
        (sent,) = of(results, "registry_submit")
        assert (sent["status"], sent["url"], sent["to"]) == \
            ("ok", url, service.url)
        # the service received it: it cloned the sibling and registered
        # what was pushed
        rec = served_record(service, url, ds.repo.get_hexsha())
        assert rec is not None
        # the local registry was not involved (not even created)
        assert not default_registry_path().exists()

        # after --off, the service hears nothing of a push
        call(registry_on_push, dataset=ds.path, off=True)
        head = commit(ds, "b.dat")
        results = push(ds)
        assert of(results, "publish") and not of(results, "registry_submit")
        assert served_record(service, url, head, timeout=3) is None
    assert os.path.exists(root / "sib.git" / "info" / "refs")
