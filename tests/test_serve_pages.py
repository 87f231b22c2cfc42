"""registry-serve's web pages, against a real server process.

One server (``datalad registry-serve``, helpers from ``test_serve_api``)
serves the generated records of ``bench_file`` plus a few made here: a
superdataset whose subdatasets are registered (one under another form of
its URL), two copies of one dataset, and a record full of hostile values.
The first half of the module speaks plain HTTP (requests); the second
drives headless Chromium (``/usr/bin/chromium``) with Playwright and saves
screenshots into ``$DATALAD_REGISTRY_TEST_ARTIFACTS`` (if set) or a
``pages-screenshots`` directory under pytest's temporary directory.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import statistics
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests

from datalad_registry_ext.records import ORDER_KEYS, record_id

from .test_serve_api import ServerProcess, serve_env, sync

pytest.importorskip("fastapi")
pytest.importorskip("jinja2")

# -- the records made here ---------------------------------------------------------------

SUPER_ID = "11111111-2222-4333-8444-555555555555"
RAW_ID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
MISSING_ID = "99999999-8888-4777-8666-555555555555"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
SUPER_URL = "https://example.org/lab/super"
RAW_URL = "https://example.org/lab/raw"           # subdataset: raw.git
MIRROR_URL = "https://mirror.example.net/lab/raw"
HOSTILE_URL = "https://evil.example/<script>alert(1)</script>"
HOSTILE_DS_ID = '"><script>alert(4)</script>'
HOSTILE_MARKERS = ("<script>alert(", "<img src=x", "<b>bold", "<i>x")


def _meta(extracted) -> list[dict]:
    return [{"extractor_name": "metalad_core", "extractor_version": "1",
             "dataset_version": "0" * 40, "dataset_describe": "v1.0",
             "extraction_parameter": {}, "extracted_metadata": extracted}]


def _record(url, **kw) -> dict:
    rec = {"url": url, "processed": True, "metadata": [],
           "branches": {"main": {"hexsha": "a" * 40,
                                 "last_commit_dt": "2024-05-30T13:09:47+00:00"},
                        "git-annex": {"hexsha": "b" * 40,
                                      "last_commit_dt": "2024-05-30T13:09:47+00:00"}},
           "tags": [{"name": "v1.0", "hexsha": "c" * 40}],
           "head": "a" * 40, "head_describe": "v1.0",
           "annex_key_count": 3, "annexed_files_in_wt_count": 3,
           "annexed_files_in_wt_size": 1_234_567_890, "git_objects_kb": 2048,
           "last_update_dt": "2024-05-30T13:09:47+00:00",
           "last_chk_dt": "2024-06-01T00:00:00+00:00"}
    rec.update(kw)
    return rec


MADE = [
    _record(SUPER_URL, ds_id=SUPER_ID, metadata=_meta({"name": "Super lab"}),
            subdatasets=[
                {"path": "inputs/raw", "url": RAW_URL + ".git",
                 "ds_id": RAW_ID},
                {"path": "inputs/missing",
                 "url": "https://example.org/lab/missing",
                 "ds_id": MISSING_ID}]),
    _record(RAW_URL, ds_id=RAW_ID, head_describe="raw-v2",
            metadata=_meta({"name": "Raw data"})),
    _record(MIRROR_URL, ds_id=RAW_ID, head_describe="raw-v1",
            last_update_dt="2023-01-02T03:04:05+00:00"),
    _record(HOSTILE_URL, ds_id=HOSTILE_DS_ID,
            head_describe="<img src=x onerror=alert(3)>",
            metadata=_meta({"name": "</pre><script>alert(2)</script>",
                            "description": "<b>bold</b> & \"quoted\""}),
            subdatasets=[{"path": "<script>alert(5)</script>",
                          "url": "javascript:alert(6)",
                          "ds_id": "<i>x</i>"}]),
]


@pytest.fixture(scope="module")
def made_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pages-made") / "made.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for rec in MADE:
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory, bench_file, made_file):
    """The running server; ``site.url`` ends with "/"; ``site.ids`` maps
    the made records' URLs to their ids; ``site.env`` is its environment."""
    root = tmp_path_factory.mktemp("serve-pages")
    env = serve_env(root)
    registry = root / "registry"
    sync(registry, bench_file, env)
    sync(registry, made_file, env)
    with ServerProcess(registry, env) as server:
        server.env = env
        server.registry = registry
        server.ids = {rec["url"]: record_id(str(made_file), rec["url"])
                      for rec in MADE}
        yield server


def get(site, path, **kw):
    kw.setdefault("timeout", 60)
    kw.setdefault("allow_redirects", False)
    return requests.get(site.url.rstrip("/") + path, **kw)


def html_of(resp, status=200) -> str:
    assert resp.status_code == status, resp.text[:2000]
    assert resp.headers["content-type"].startswith("text/html")
    text = resp.text
    assert "Traceback" not in text
    assert text.startswith("<!doctype html>")
    assert '<meta name="viewport"' in text
    return text


class _Links(HTMLParser):
    """Every URL-bearing attribute of a page, with its tag and the text
    of the results table's URL cells."""

    URL_ATTRS = {"href", "src", "action", "formaction", "srcset", "poster",
                 "data", "background", "cite"}

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in self.URL_ATTRS and value is not None:
                self.urls.append((tag, name, value))
            if name.startswith("on"):
                self.urls.append((tag, name, value or ""))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.scripts.append(data)


def links(text: str) -> _Links:
    parser = _Links()
    parser.feed(text)
    return parser


def result_urls(text: str) -> list[str]:
    """The URLs in the results table, in order (unescaped)."""
    import html
    cells = re.findall(r'<td class="col-url" data-label="URL"><a href="[^"]*">'
                       r'([^<]*)</a>', text)
    return [html.unescape(c) for c in cells]


# -- plain HTTP ------------------------------------------------------------------------------

def test_root_redirects_to_the_overview(site):
    r = get(site, "/")
    assert r.status_code == 302
    assert r.headers["location"].endswith("/overview/")
    r = get(site, "/overview?query=haxby")
    assert r.status_code in (301, 307, 308)
    assert r.headers["location"].endswith("/overview/?query=haxby")


def test_overview_pages_through_everything(site, bench_records):
    total = len(bench_records) + len(MADE)
    text = html_of(get(site, "/overview/"))
    assert f"<strong>1 – 20</strong> of <strong>{total:,}</strong>" in text
    assert len(result_urls(text)) == 20
    assert '<label for="query">' in text and 'id="query"' in text
    assert "<details class=\"stats\"" in text and "<summary>" in text
    # each row links to its record page
    ids = re.findall(r'<td class="col-url" data-label="URL"><a href="/records/(\d+)"',
                     text)
    assert len(ids) == 20
    last = -(-total // 20)
    nav = text[text.index('<nav class="pager"'):]
    assert f'href="/overview/?page={last}" rel="last"' in nav
    assert 'href="/overview/?page=2" rel="next"' in nav
    assert 'aria-disabled="true">« First' in nav

    text = html_of(get(site, "/overview/", params={"page": 2}))
    assert f"<strong>21 – 40</strong> of <strong>{total:,}</strong>" in text
    assert 'href="/overview/" rel="first"' in text
    text = html_of(get(site, "/overview/", params={"page": last}))
    assert len(result_urls(text)) == total - 20 * (last - 1)
    assert 'aria-disabled="true">Next' in text

    text = html_of(get(site, "/overview/", params={"per_page": 50}))
    assert len(result_urls(text)) == 50
    assert 'href="/overview/?per_page=50&amp;page=2" rel="next"' in text
    text = html_of(get(site, "/overview/", params={"per_page": 1000}))
    assert len(result_urls(text)) == 100   # capped, as upstream


def test_overview_bad_paging_is_a_normal_page(site):
    for params in ({"page": 0}, {"page": "abc"}, {"per_page": -1},
                   {"per_page": "x"}):
        text = html_of(get(site, "/overview/", params=params), 400)
        assert "must be a positive whole number" in text
        assert 'id="query"' in text
    for params in ({"page": 10 ** 10}, {"page": 10 ** 30},
                   {"page": "9" * 5000}, {"per_page": "9" * 5000}):
        text = html_of(get(site, "/overview/", params=params), 400)
        assert "must be at most" in text
    text = html_of(get(site, "/overview/", params={"per_page": 10 ** 19}))
    assert len(result_urls(text)) == 100
    text = html_of(get(site, "/overview/", params={"page": 10 ** 6}), 404)
    assert "There is no page 1000000" in text
    assert 'rel="first"' in text   # a way back


@pytest.mark.parametrize("sort,key,reverse", [
    ("url-asc", "url", False), ("url-desc", "url", True),
    ("keys-desc", "annex_key_count", True),
    ("update-asc", "last_update_dt", False),
    ("annexed_files_in_wt_size-desc", "annexed_files_in_wt_size", True),
    ("git_objects_kb-asc", "git_objects_kb", False),
    # our order keys are sort names too
    ("annex_key_count-asc", "annex_key_count", False),
])
def test_sorting(site, bench_records, sort, key, reverse):
    from datalad_registry_ext.search import order_records
    text = html_of(get(site, "/overview/", params={"sort": sort,
                                                   "query": "url:github"}))
    shown = result_urls(text)
    matching = [r for r in bench_records if "github" in r["url"].lower()]
    expected = [r["url"] for r in order_records(
        matching, key, "desc" if reverse else "asc")][:20]
    assert shown == expected
    # the sorted column says so (to screen readers too)
    assert f'aria-sort="{"descending" if reverse else "ascending"}"' in text


def test_sort_headers_cover_every_order_key(site):
    text = html_of(get(site, "/overview/"))
    thead = text[text.index("<thead>"):text.index("</thead>")]
    hrefs = re.findall(r'href="([^"]+)"', thead)
    sorts = {parse_qs(urlsplit(h.replace("&amp;", "&")).query)["sort"][0]
             for h in hrefs}
    from datalad_registry_ext.server.pages import SORT_NAMES
    assert {SORT_NAMES[s.rpartition("-")[0]] for s in sorts} == set(ORDER_KEYS)
    # default: last update descending; its header flips to ascending,
    # the others go descending first (upstream's sort_href)
    assert "sort=update-asc" in thead and "sort=keys-desc" in thead
    assert 'aria-sort="descending"' in thead
    # an unknown sort is the default, with a notice
    text = html_of(get(site, "/overview/", params={"sort": "bogus-up"}))
    assert "Unknown sort" in text and 'aria-sort="descending"' in text


def test_invalid_query_shows_the_caret_message(site):
    query = "(haxby OR url:gin"
    text = html_of(get(site, "/overview/", params={"query": query}), 400)
    pre = re.search(r'<div class="error" id="query-error" role="alert">.*?'
                    r"<pre>(.*?)</pre>", text, re.S)
    assert pre, text
    import html
    message = html.unescape(pre.group(1))
    assert message.startswith("Invalid query: unbalanced parenthesis")
    lines = message.splitlines()
    assert lines[1] == "  " + query and lines[2] == "  " + " " * len(query) + "^"
    # the search box keeps the query, marked invalid
    assert 'value="(haxby OR url:gin"' in text
    assert 'aria-invalid="true"' in text
    for bad in ("url:", "NOT", 'metadata[]:x', "nosuchfield:1", 'url:~"(a+)+"'):
        text = html_of(get(site, "/overview/", params={"query": bad}), 400)
        assert "Invalid query" in text and "^" in text


def test_search_and_statistics(site, bench_records):
    text = html_of(get(site, "/overview/", params={"query": "haxby"}))
    matching = [r for r in bench_records if "haxby" in json.dumps(
        r, ensure_ascii=False).lower()]
    assert matching
    assert f"of <strong>{len(matching):,}</strong>" in text
    assert "unique DataLad datasets" in text and "combined size:" in text
    assert "Statistics details" in text
    text = html_of(get(site, "/overview/",
                       params={"query": "url:nothing-is-called-this"}))
    assert "No records match" in text and 'class="results"' not in text


def test_examples_link_to_their_queries(site):
    from datalad_registry_ext.server.pages import EXAMPLES
    text = html_of(get(site, "/overview/"))
    help_ = text[text.index('<details class="help"'):]
    hrefs = re.findall(r'<li><a href="([^"]+)" data-query', help_)
    import html
    queries = [parse_qs(urlsplit(html.unescape(h)).query)["query"][0]
               for h in hrefs]
    assert queries == [q for q, _ in EXAMPLES]
    for q in queries:  # every example is a valid query
        html_of(get(site, "/overview/", params={"query": q}))
    # the help names every field the query language knows
    from datalad_registry_ext.query.fields import KNOWN_FIELDS
    fields = help_[help_.index("<p>Fields:"):]
    fields = fields[:fields.index("</p>")]
    assert set(KNOWN_FIELDS) <= set(re.findall(r"<code>(\w+)</code>",
                                               fields))


def test_record_page(site, made_file):
    ids = site.ids
    text = html_of(get(site, f"/records/{ids[SUPER_URL]}"))
    assert f'<h1 class="record-url">{SUPER_URL}</h1>' in text
    # facts: every field, human sizes and dates
    for field in ("ds_id", "head", "head_describe", "annex_key_count",
                  "annexed_files_in_wt_size", "git_objects_kb",
                  "last_update_dt", "last_chk_dt", "processed", "source"):
        assert f">{field}</dt>" in text, field
    assert "1.2 GB" in text and "(1,234,567,890 bytes)" in text
    assert "2.1 MB" in text and "(2,048 KiB)" in text
    assert '<time datetime="2024-05-30T13:09:47+00:00">2024-05-30 13:09:47 UTC</time>' \
        in text
    # metadata per extractor, pretty JSON, collapsible
    assert '<details class="metadata">' in text
    assert "&#34;name&#34;: &#34;Super lab&#34;" in text
    # subdatasets: the registered one links to its record (registered
    # without ".git") and to its dataset page; the other is not registered
    assert f'<a href="/records/{ids[RAW_URL]}">{RAW_URL}.git</a>' in text
    assert f'<a href="/datasets/{RAW_ID}">{RAW_ID}</a>' in text
    assert "https://example.org/lab/missing <span class=\"raw\">(not registered)" \
        in text
    assert f'href="/datasets/{MISSING_ID}"' not in text
    assert "No other copy of dataset" in text

    text = html_of(get(site, f"/records/{ids[RAW_URL]}"))
    used_by = text[text.index('id="used-by"'):text.index('id="copies"')]
    assert f'<a href="/records/{ids[SUPER_URL]}">{SUPER_URL}</a>' in used_by
    copies = text[text.index('id="copies"'):]
    assert f'<a href="/records/{ids[MIRROR_URL]}">{MIRROR_URL}</a>' in copies
    assert f'<a href="/records/{ids[RAW_URL]}">' not in copies  # not itself
    assert f'href="/datasets/{RAW_ID}"' in copies


def test_record_pages_of_generated_records(site, bench_records):
    """Every kind of generated record renders (with subdatasets, copies,
    unprocessed ones, plain git repositories)."""
    text = html_of(get(site, "/overview/", params={
        "query": 'subds_url:""', "per_page": 100}))
    rids = re.findall(r'href="/records/(\d+)"', text)[:15]
    text = html_of(get(site, "/overview/", params={"sort": "update-asc",
                                                   "per_page": 100}))
    rids += re.findall(r'href="/records/(\d+)"', text)[-15:]
    assert len(rids) == 30
    linked = 0
    for rid in rids:
        page = html_of(get(site, f"/records/{rid}"))
        subs = page[page.index('id="subdatasets"'):page.index('id="used-by"')]
        linked += subs.count('href="/records/')
    assert linked > 0  # generated subdatasets point at generated records


def test_unknown_records_are_404_pages(site):
    for rid in ("1", "0", "-5", "abc", "9" * 30, "1.5", "١٢"):
        text = html_of(get(site, f"/records/{rid}"), 404)
        assert "No record has the id" in text
    text = html_of(get(site, "/no/such/page"), 404)
    assert "There is no page at /no/such/page" in text


def test_dataset_landing_page(site):
    ids = site.ids
    text = html_of(get(site, f"/datasets/{RAW_ID}"))
    assert f"<h1>Dataset <code class=\"ds-id\">{RAW_ID}</code></h1>" in text
    assert "2 registered copies" in text
    for url in (RAW_URL, MIRROR_URL):
        assert f'<a href="/records/{ids[url]}">{url}</a>' in text
    assert "raw-v1" in text and "raw-v2" in text and "made.jsonl.gz" in text
    # upper case is the same id
    html_of(get(site, f"/datasets/{RAW_ID.upper()}"))

    r = get(site, f"/datasets/{RAW_ID}",
            headers={"Accept": "application/json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert isinstance(body, list)
    assert sorted(rec["url"] for rec in body) == sorted([RAW_URL, MIRROR_URL])
    for rec in body:
        assert rec["id"] == ids[rec["url"]] and rec["ds_id"] == RAW_ID
        assert None not in rec.values()
    raw = next(rec for rec in body if rec["url"] == RAW_URL)
    assert [m["extractor_name"] for m in raw["metadata"]] == ["metalad_core"]
    assert raw["metadata"][0]["link"].startswith("/api/v2/url-metadata/")


@pytest.mark.parametrize("ds_id", [UNKNOWN_ID, "not-a-uuid", "1234",
                                   " " + RAW_ID, "a/b",
                                   HOSTILE_DS_ID, "%00", RAW_ID + "0"])
def test_unknown_dataset_is_404(site, ds_id):
    path = "/datasets/" + quote(ds_id, safe="")
    text = html_of(get(site, path), 404)
    assert "No registered dataset" in text or "is not a dataset id" in text
    assert "<script>alert" not in text
    r = get(site, path, headers={"Accept": "application/json"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"code", "name", "description"}
    assert body["code"] == 404 and body["name"] == "Not Found"


@pytest.mark.parametrize("accept,json_", [
    ("application/json", True),
    ("application/json, text/html;q=0.5", True),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
    ("text/html;q=0.5, application/json;q=0.9", True),
    ("*/*", False), ("", False), ("application/*", True),
    ("application/json;q=0", False), ("text/plain", False),
])
def test_content_negotiation(site, accept, json_):
    r = get(site, f"/datasets/{RAW_ID}", headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(
        "application/json" if json_ else "text/html")


def _pages(site) -> list[str]:
    ids = site.ids
    return ["/overview/", "/overview/?query=haxby",
            "/overview/?query=%28broken", "/overview/?page=0",
            "/overview/?sort=url-asc&page=3&per_page=50",
            *(f"/records/{rid}" for rid in ids.values()),
            f"/datasets/{RAW_ID}", f"/datasets/{SUPER_ID}",
            "/datasets/nope", "/records/1", "/nowhere"]


def test_no_external_urls(site):
    """No page refers to another host (no CDN, no fonts, no links out):
    every href/src/action is a path on this server."""
    host = urlsplit(site.url).netloc
    for path in _pages(site):
        r = get(site, path)
        assert r.status_code < 500, path
        for tag, attr, value in links(r.text).urls:
            assert not attr.startswith("on"), (path, tag, attr, value)
            parts = urlsplit(value)
            assert not parts.scheme or parts.netloc == host, \
                (path, tag, attr, value)
            assert not value.startswith("//"), (path, tag, attr, value)
            assert value.startswith(("/", "#")), (path, tag, attr, value)
    # the stylesheet and script are served, with no outside references
    css = get(site, "/static/pages.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert "url(" not in css.text and "@import" not in css.text
    js = get(site, "/static/pages.js")
    assert js.status_code == 200
    assert "http" not in js.text and "fetch(" not in js.text


def test_hostile_values_are_escaped(site):
    rid = site.ids[HOSTILE_URL]
    pages = [get(site, "/overview/", params={"query": "evil.example"}),
             get(site, "/overview/", params={"query": "<script>alert"}),
             get(site, f"/records/{rid}"),
             get(site, "/overview/", params={"query": '"<script>'}),
             get(site, "/overview/", params={"query": "<script>(x"})]
    for r in pages:
        assert r.status_code in (200, 400)
        text = html_of(r, r.status_code)
        for marker in HOSTILE_MARKERS:
            assert marker not in text, (r.url, marker)
        assert not any("alert" in s for s in links(text).scripts)
    overview, _, record, _, _ = (p.text for p in pages)
    assert "evil.example/&lt;script&gt;alert(1)&lt;/script&gt;" in overview
    assert "&lt;img src=x onerror=alert(3)&gt;" in overview
    assert "&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in record
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; \\&#34;quoted\\&#34;" in record
    assert "javascript:" not in "".join(v for _, _, v in links(record).urls)
    # the hostile ds_id is no link (not a dataset id)
    assert "/datasets/%22" not in record and '/datasets/"' not in record


def test_overview_runs_one_search(site, monkeypatch):
    """The overview costs one search whatever the page size (no queries
    per row): counted in process, on the same index."""
    import warnings
    with warnings.catch_warnings():
        # starlette's TestClient warns about the httpx it runs on
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from datalad_registry_ext import search as search_mod
    from datalad_registry_ext.server import create_app
    for name in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, site.env[name])
    calls = []
    real = search_mod.search

    def counting(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(search_mod, "search", counting)
    with TestClient(create_app(site.registry, start_worker=False)) as client:
        r = client.get("/overview/", params={"per_page": 100})
        assert r.status_code == 200 and len(result_urls(r.text)) == 100
    assert len(calls) == 1 and calls[0]["limit"] == 100 and calls[0]["stats"]


def test_head_requests(site):
    for path in ("/overview/", f"/records/{site.ids[RAW_URL]}",
                 f"/datasets/{RAW_ID}"):
        r = requests.head(site.url.rstrip("/") + path, timeout=60)
        assert r.status_code == 200 and not r.content
        assert r.headers["content-type"].startswith("text/html")


def test_unreadable_registry_is_a_page_not_a_500(tmp_path):
    """A registry that is gone (or cannot be read) answers every page with
    its message and 503, never a traceback."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from datalad_registry_ext.server import create_app
    app = create_app(tmp_path / "no-registry", start_worker=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/overview/", "/overview/?query=haxby",
                     f"/datasets/{RAW_ID}"):
            r = client.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
            assert "The registry cannot be read" in r.text
            assert "Traceback" not in r.text
        r = client.get(f"/datasets/{RAW_ID}",
                       headers={"Accept": "application/json"})
        assert r.status_code == 503 and r.json()["code"] == 503
        # a lookup by id finds nothing there
        r = client.get("/records/12345")
        assert r.status_code == 404 and "No record has the id" in r.text


def test_overview_is_fast(site):
    """A lenient bound (the machine is shared); benchmarks/bench_serve.py
    measures the 13k-record case against its 50 ms target."""
    get(site, "/overview/", params={"query": "haxby"})
    times = []
    for _ in range(15):
        start = time.perf_counter()
        r = get(site, "/overview/", params={"query": "haxby"})
        times.append(time.perf_counter() - start)
        assert r.status_code == 200
    assert statistics.median(times) < 0.25, times


# -- in a browser ------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu",
                 "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package 'chromium')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if os.path.exists(CHROMIUM)
            else shutil.which("chromium"), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where the screenshots go."""
    env = os.environ.get("DATALAD_REGISTRY_TEST_ARTIFACTS")
    path = Path(env) / "pages-screenshots" if env else \
        tmp_path_factory.mktemp("pages-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def page(browser, site, shots, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  base_url=site.url.rstrip("/"))
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # nothing may be fetched from anywhere else
    outside = []
    pg.on("request", lambda r: None if r.url.startswith(site.url)
          else outside.append(r.url))
    yield pg
    pg.screenshot(path=str(shots / f"{request.node.name}-end.png"),
                  full_page=True)
    context.close()
    assert not errors, errors
    assert not outside, outside


def test_browser_search_sort_and_page(page, shots, bench_records):
    page.goto("/overview/")
    page.fill("#query", "url:github")
    with page.expect_navigation() as nav:
        page.press("#query", "Enter")
    assert nav.value.status == 200
    assert "query=url%3Agithub" in page.url
    total = sum("github" in r["url"].lower() for r in bench_records)
    assert page.locator("p.count").inner_text().startswith(
        f"1 – 20 of {total:,}")
    page.screenshot(path=str(shots / "overview-search.png"), full_page=True)

    # sort by a column: the first click sorts descending, the second ascending
    page.click("th.col-annex_key_count a")
    assert "sort=keys-desc" in page.url and "query=url%3Agithub" in page.url
    header = page.locator("th.col-annex_key_count")
    assert header.get_attribute("aria-sort") == "descending"
    keys = [int(t.replace(",", "") or -1) for t in page.locator(
        'td[data-label="Annex keys"]').all_inner_texts()]
    assert keys == sorted(keys, reverse=True)
    page.click("th.col-annex_key_count a")
    assert "sort=keys-asc" in page.url
    assert header.get_attribute("aria-sort") == "ascending"
    page.screenshot(path=str(shots / "overview-sorted.png"), full_page=True)

    # the next page keeps query and sort
    first = page.locator("td.col-url a").first.inner_text()
    page.click("a[rel=next]")
    assert "page=2" in page.url and "sort=keys-asc" in page.url
    assert page.locator("p.count").inner_text().startswith(
        f"21 – 40 of {total:,}")
    assert page.locator("td.col-url a").first.inner_text() != first
    page.click("a[rel=prev]")
    assert page.locator("td.col-url a").first.inner_text() == first


def test_browser_record_and_landing_page(page, site, shots):
    page.goto("/overview/?query=" + quote(f"url:{SUPER_URL}"))
    page.click(f"td.col-url a:text-is('{SUPER_URL}')")
    assert page.url.endswith(f"/records/{site.ids[SUPER_URL]}")
    assert page.locator("h1").inner_text() == SUPER_URL
    # metadata is collapsed, and opens
    details = page.locator("details.metadata").first
    assert not details.evaluate("d => d.open")
    details.locator("summary").click()
    assert details.evaluate("d => d.open")
    assert "Super lab" in details.locator("pre.json").inner_text()
    page.screenshot(path=str(shots / "record.png"), full_page=True)

    # a registered subdataset opens its own record
    page.click(f"#subdatasets a:text-is('{RAW_URL}.git')")
    assert page.url.endswith(f"/records/{site.ids[RAW_URL]}")
    assert SUPER_URL in page.locator("#used-by").inner_text()
    assert MIRROR_URL in page.locator("#copies").inner_text()
    # the dataset id opens the landing page of all copies
    page.click(f"dd a:text-is('{RAW_ID}')")
    assert page.url.endswith(f"/datasets/{RAW_ID}")
    assert "2 registered copies" in page.locator("main").inner_text()
    rows = page.locator("table.results tbody tr")
    assert rows.count() == 2
    page.screenshot(path=str(shots / "dataset.png"), full_page=True)


def test_browser_invalid_query(page, shots):
    page.goto("/overview/")
    page.fill("#query", "haxby AND (url:gin")
    with page.expect_navigation() as nav:
        page.click("form.search button[type=submit]")
    assert nav.value.status == 400
    error = page.locator("#query-error pre")
    assert error.is_visible()
    lines = error.inner_text().splitlines()
    assert lines[0].startswith("Invalid query:")
    assert lines[1] == "  haxby AND (url:gin"
    assert lines[2].rstrip().endswith("^")
    assert page.locator("#query").input_value() == "haxby AND (url:gin"
    assert page.locator("#query").get_attribute("aria-invalid") == "true"
    page.screenshot(path=str(shots / "invalid-query.png"), full_page=True)


def test_browser_examples_and_statistics(page):
    page.goto("/overview/")
    help_ = page.locator("details.help")
    assert not help_.evaluate("d => d.open")
    help_.locator("summary").click()
    page.click("ul.examples a[data-query='url:github']")
    assert page.locator("#query").input_value() == "url:github"
    stats = page.locator("details.stats")
    stats.locator("summary").click()
    assert "Unique (one copy per dataset id)" in stats.inner_text()


def _tab_to(page, predicate: str, limit: int = 80) -> int:
    for n in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate(f"(() => {{ const e = document.activeElement; "
                         f"return !!e && ({predicate}); }})()"):
            return n
    raise AssertionError(f"Tab never reached: {predicate}")


def test_browser_keyboard(page, shots):
    page.goto("/overview/?query=haxby")
    _tab_to(page, "e.id === 'query'")
    page.keyboard.press("Control+A")
    page.keyboard.type("url:gin")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "query=url%3Agin" in page.url
    # on to the first result, and open it with Enter
    _tab_to(page, "e.matches('td.col-url a')")
    focused = page.evaluate("document.activeElement.getAttribute('href')")
    outline = page.evaluate(
        "getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "no visible focus"
    page.screenshot(path=str(shots / "keyboard-focus.png"))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith(focused)
    # the skip link is the first stop
    page.goto("/overview/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    # "/" focuses the search box (the small script)
    page.goto("/overview/")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "query"


def test_browser_phone_has_no_horizontal_overflow(browser, site, shots):
    context = browser.new_context(
        viewport={"width": 375, "height": 740}, device_scale_factor=2,
        is_mobile=True, has_touch=True, base_url=site.url.rstrip("/"))
    pg = context.new_page()
    try:
        for name, path in [
                ("overview", "/overview/?query=url%3Agithub"),
                ("overview-error", "/overview/?query=%28haxby+OR+url%3Agin"
                 "+AND+metadata%5Bbids_dataset%5D.Authors%3Ahaxby"),
                ("record", f"/records/{site.ids[SUPER_URL]}"),
                ("record-hostile", f"/records/{site.ids[HOSTILE_URL]}"),
                ("dataset", f"/datasets/{RAW_ID}")]:
            pg.goto(path)
            for summary in pg.locator("details summary").all():
                summary.click()
            width = pg.evaluate(
                "[document.documentElement.scrollWidth, window.innerWidth]")
            pg.screenshot(path=str(shots / f"phone-{name}.png"),
                          full_page=True)
            assert width[0] <= width[1], (name, width)
        # the sort form stands in for the hidden header row
        pg.goto("/overview/")
        pg.select_option("#sort", "url-asc")
        pg.click("form.sort-form button")
        assert "sort=url-asc" in pg.url
    finally:
        context.close()


def test_browser_without_javascript(browser, site):
    context = browser.new_context(java_script_enabled=False,
                                  base_url=site.url.rstrip("/"))
    pg = context.new_page()
    try:
        pg.goto("/overview/")
        pg.fill("#query", "haxby")
        with pg.expect_navigation():
            pg.press("#query", "Enter")
        assert "query=haxby" in pg.url
        pg.locator("details.help summary").click()
        pg.click("ul.examples a[data-query='url:github']")
        assert pg.locator("#query").input_value() == "url:github"
        pg.click("a[rel=next]")
        assert "page=2" in pg.url
    finally:
        context.close()
