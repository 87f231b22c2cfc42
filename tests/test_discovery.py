"""Discovery (``registry-update --discover``): DataLad's usage-dashboard
``datalad-repos.json``, generated here, read from a file and from a URL.

The repositories it lists are real git repositories served over git's dumb
HTTP protocol on 127.0.0.1, so that the new ones are really cloned and
registered; the dashboard's clone-URL rules (``.git`` appended for GitHub
and hub.datalad.org, not for GIN) decide which path each is served under.
"""
from __future__ import annotations

import json
from pathlib import Path

import datalad
import pytest
from datalad.api import registry_search, registry_submit, registry_sync

from datalad_registry_ext import discovery
from datalad_registry_ext.index import local_index
from datalad_registry_ext.registry import RECORDS_FILE, head_commit

from .fixtures import HTTPServer, call, make_git_repo, run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Five plain git repositories behind one HTTP server: ``url(name)``
    is the dashboard's page URL of each (``gh/b`` is cloned as
    ``gh/b.git``, ``gin/a`` as is)."""
    root = tmp_path_factory.mktemp("dashboard-repos")
    work = tmp_path_factory.mktemp("dashboard-work")
    layout = {"a": "gin/a", "b": "gh/b.git", "c": "gh/c.git",
              "d": "hub/d.git", "e": "gh/e.git"}
    for name, where in layout.items():
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        make_git_repo(work / name, {"README": f"repository {name}"},
                      bare_copy=root / where)
    with HTTPServer(root) as server:
        server.root = root
        yield server


def page(server, where: str) -> str:
    """The dashboard's ``url`` of a repository (its web page)."""
    return f"{server.url}/{where}"


def dashboard(path: Path, **lists) -> Path:
    """A datalad-repos.json with the dashboard's fields: ``lists`` maps a
    service to ``[(url, status)]``."""
    data = {"github": [], "osf": [], "gin": [], "hub_datalad_org": [],
            "atris": []}
    for service, entries in lists.items():
        for n, (url, status) in enumerate(entries):
            entry = {"id": n + 1, "name": url.rsplit("/", 2)[-2] + "/"
                     + url.rsplit("/", 1)[-1], "url": url, "status": status,
                     "stars": 0}
            if service == "github":
                entry.update(dataset=True, run=False, container_run=False)
            if service == "osf":
                entry = {"id": "4cdw3", "name": "an OSF project", "url": url,
                         "status": status}
            data[service].append(entry)
    path.write_text(json.dumps(data, indent=1))
    return path


def discover(registry, source, **kw):
    kw.setdefault("extract", False)
    return list(discovery.discover(registry, str(source), **kw))


def by_action(results, action):
    return [r for r in results if r.get("action") == action]


def flagged(registry) -> dict:
    return {r["url"]: r.get("dashboard_gone_dt")
            for r in local_index(registry).records()}


def committed(registry) -> dict:
    text = run("git", "show", f"HEAD:{RECORDS_FILE}", cwd=registry)
    return {json.loads(line)["url"]: json.loads(line).get("dashboard_gone_dt")
            for line in text.splitlines()}


def search_urls(registry, query) -> list[str]:
    res = call(registry_search, query, dataset=str(registry))
    return sorted(r["url"] for r in res
                  if r.get("action") == "registry_search" and
                  r["status"] == "ok")


def test_new_repositories_are_submitted_gone_ones_flagged(tmp_path, served):
    reg = tmp_path / "reg"
    url_c = page(served, "gh/c") + ".git"
    url_d = page(served, "hub/d") + ".git"
    # c and d are registered already (as DataLad-Registry would have them:
    # the clone URL)
    res = call(registry_submit, [url_c, url_d], dataset=str(reg),
               extract=False)
    assert [r["status"] for r in res] == ["ok", "ok"], res

    src = dashboard(
        tmp_path / "datalad-repos.json",
        github=[(page(served, "gh/b"), "active"),
                (page(served, "gh/c"), "gone"),
                (page(served, "gh/e"), "gone")],
        gin=[(page(served, "gin/a"), "active")],
        hub_datalad_org=[(page(served, "hub/d"), "active")],
        osf=[("https://osf.io/4cdw3/", "active")])
    res = discover(reg, src)

    # c: registered, listed as gone -> flagged, in one commit
    (flag,) = by_action(res, "registry_discover")[:-1]
    assert (flag["status"], flag["change"], flag["url"]) == \
        ("ok", "gone", url_c)
    assert "gone from DataLad's usage dashboard" in flag["message"]
    # a and b: new, active -> registered (with the clone URLs); d: known
    submitted = by_action(res, "registry_submit")
    assert sorted((r["status"], r["change"], r["url"]) for r in submitted) \
        == [("ok", "new", page(served, "gh/b") + ".git"),
            ("ok", "new", page(served, "gin/a"))]
    summary = res[-1]
    assert summary["action"] == "registry_discover" and \
        summary["status"] == "ok" and summary["path"] == str(src)
    assert summary["counts"] == dict(
        active=3, gone=2, unsupported=1, submitted=2, flagged=1,
        unflagged=0, still_gone=0, gone_unregistered=1)
    assert "1 OSF entry skipped" in summary["message"]

    marks = flagged(reg)
    assert set(marks) == {url_c, url_d, page(served, "gh/b") + ".git",
                          page(served, "gin/a")}
    assert marks[url_c] and not any(
        v for u, v in marks.items() if u != url_c)
    # committed, so clones of the registry and rebuilt indexes keep it
    assert committed(reg)[url_c] == marks[url_c]
    assert "Usage dashboard: flag 1 gone" in run(
        "git", "log", "--format=%s", cwd=reg)
    # searchable: null on every other record
    assert search_urls(reg, 'dashboard_gone_dt:>2000-01-01') == [url_c]
    assert search_urls(reg, 'NOT dashboard_gone_dt:>2000-01-01') == sorted(
        u for u in marks if u != url_c)

    # the same list again: nothing new, nothing committed, the flag keeps
    # the time it was first seen
    head = head_commit(reg)
    res = discover(reg, src)
    assert [r["action"] for r in res] == ["registry_discover"]
    assert res[0]["status"] == "notneeded"
    assert res[0]["counts"]["still_gone"] == 1
    assert "all registered here" in res[0]["message"]
    assert head_commit(reg) == head and flagged(reg) == marks

    # an index rebuilt from the registry has the flag
    local_index(reg).path.unlink()
    assert call(registry_sync, dataset=str(reg))[-1]["status"] == "ok"
    assert flagged(reg) == marks

    # c listed as active again: the flag goes
    src2 = dashboard(tmp_path / "again.json",
                     github=[(page(served, "gh/c"), "active")])
    res = discover(reg, src2)
    (back, summary) = res
    assert (back["status"], back["change"], back["url"]) == \
        ("ok", "active", url_c)
    assert summary["counts"]["unflagged"] == 1
    assert flagged(reg)[url_c] is None and committed(reg)[url_c] is None
    assert search_urls(reg, 'dashboard_gone_dt:>2000-01-01') == []


def test_a_repository_listed_active_and_gone_counts_as_active(tmp_path,
                                                              served):
    reg = tmp_path / "reg"
    url_c = page(served, "gh/c") + ".git"
    call(registry_submit, [url_c], dataset=str(reg), extract=False)
    # the same repository as a GitHub entry (gone) and a hub one (active),
    # spelled X and X.git: one repository
    src = dashboard(tmp_path / "both.json",
                    github=[(page(served, "gh/c"), "gone")],
                    atris=[(page(served, "gh/c") + ".git/", "active")])
    res = discover(reg, src)
    assert [r["status"] for r in res] == ["notneeded"], res
    assert flagged(reg) == {url_c: None}


def test_discover_from_a_url(tmp_path, served, monkeypatch):
    reg = tmp_path / "reg"
    src = dashboard(served.root / "datalad-repos.json",
                    gin=[(page(served, "gin/a"), "active")])
    res = discover(reg, f"{served.url}/datalad-repos.json")
    assert [(r["action"], r["status"]) for r in res] == [
        ("registry_submit", "ok"), ("registry_discover", "ok")], res
    assert res[-1]["path"] == f"{served.url}/datalad-repos.json"
    assert list(flagged(reg)) == [page(served, "gin/a")]

    # an answer over datalad.registry.response-max-bytes is refused before
    # anything is registered
    head = head_commit(reg)
    dashboard(src, gin=[(page(served, "gin/a"), "active")],
              github=[(page(served, "gh/b"), "active")])
    monkeypatch.setenv("DATALAD_REGISTRY_RESPONSE__MAX__BYTES", "100")
    datalad.cfg.reload(force=True)
    try:
        res = discover(reg, f"{served.url}/datalad-repos.json")
    finally:
        monkeypatch.delenv("DATALAD_REGISTRY_RESPONSE__MAX__BYTES")
        datalad.cfg.reload(force=True)
    (err,) = res
    assert err["status"] == "error" and err["type"] == "file"
    assert "larger than 100 bytes" in err["message"]
    assert head_commit(reg) == head

    # no such file on the server: the server's answer, nothing registered
    (err,) = discover(reg, f"{served.url}/nothing-here.json")
    assert err["status"] == "error" and "HTTP 404" in err["message"]
    assert head_commit(reg) == head


def test_what_is_not_a_dashboard_is_refused_and_creates_nothing(tmp_path):
    reg = tmp_path / "reg"
    for name, text in [("list.json", '["https://example.org/x"]'),
                       ("broken.json", '{"github": [{"url": '),
                       ("latin1.json", b'{"gin": "\xe9"}'),
                       ("entry.json", '{"gin": [{"name": "no url"}]}')]:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        (res,) = discover(reg, path)
        assert res["status"] == "impossible", (name, res)
        assert str(path) in res["message"]
    (res,) = discover(reg, tmp_path / "missing.json")
    assert res["status"] == "impossible" and "cannot read" in res["message"]
    assert not reg.exists()


def test_an_entry_of_an_unknown_status_is_reported_and_skipped(tmp_path,
                                                               served):
    reg = tmp_path / "reg"
    src = dashboard(tmp_path / "odd.json",
                    gin=[(page(served, "gin/a"), "archived")])
    res = discover(reg, src)
    assert [r["status"] for r in res] == ["impossible", "notneeded"], res
    assert "unknown status 'archived'" in res[0]["message"]
    # nothing to register and nothing registered: no registry either
    assert not reg.exists()


def test_registry_update_discover(tmp_path, served):
    from datalad.api import registry_update
    reg = tmp_path / "reg"
    url_a = page(served, "gin/a")
    src = dashboard(tmp_path / "datalad-repos.json",
                    gin=[(url_a, "active")])
    res = call(registry_update, discover=str(src), dataset=str(reg),
               extract=False)
    actions = [r["action"] for r in res]
    # discovery first (the new repository, the dashboard's summary), then
    # the usual check of every registered repository
    assert actions[:2] == ["registry_submit", "registry_discover"], res
    assert res[0]["status"] == "ok" and res[0]["url"] == url_a
    assert res[1]["counts"]["submitted"] == 1
    assert "registry_update" in actions[2:]
    assert not [r for r in res if r["status"] in ("error", "impossible")]
    assert list(flagged(reg)) == [url_a]
