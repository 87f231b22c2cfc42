"""registry-serve's REST API v2, over real HTTP against a real server process
(``datalad registry-serve`` on 127.0.0.1) serving generated records.

Expected answers are computed here from the generated records themselves
(plain Python predicates); orders from ``search.order_records``, statistics
from ``stats.collection_stats`` (the reference implementations the engine is
tested against).

The helpers at the top (:func:`serve_env`, :func:`sync`,
:class:`ServerProcess`) are shared by the other ``test_serve_*`` modules.
"""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from datalad_registry_ext.query import parse
from datalad_registry_ext.query.parser import MAX_QUERY_LENGTH
from datalad_registry_ext.records import ORDER_KEYS, record_id
from datalad_registry_ext.search import order_records
from datalad_registry_ext.stats import collection_stats

pytest.importorskip("fastapi")

ENVELOPE_KEYS = {"code", "name", "description"}


# -- helpers (also used by the other test_serve_* modules) ---------------------------

def serve_env(root: Path) -> dict:
    """An environment whose user dirs are under ``root``: the server
    process and the commands run beside it share one index."""
    env = dict(os.environ, XDG_CACHE_HOME=str(root / "cache"),
               XDG_DATA_HOME=str(root / "data"),
               XDG_CONFIG_HOME=str(root / "config"))
    env.pop("DATALAD_REGISTRY_DATASET", None)
    return env


def sync(registry: Path, source: Path, env: dict) -> None:
    """``datalad registry-sync`` in its own process."""
    out = subprocess.run(["datalad", "registry-sync", "-d", str(registry),
                          str(source)], env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


class ServerProcess:
    """``datalad registry-serve --port 0`` in its own process; ``url`` is
    the URL it reports (its first line of output)."""

    def __init__(self, registry: Path, env: dict, *args: str,
                 log: Path | None = None, timeout: float = 90):
        self.log = log or Path(str(registry) + ".serve.log")
        self._log = open(self.log, "a")
        self.proc = subprocess.Popen(
            ["datalad", "registry-serve", "-d", str(registry), "--port", "0",
             *args], env=env, stdout=subprocess.PIPE, stderr=self._log,
            text=True, start_new_session=True)
        self.first_line = self._line(timeout)
        m = re.search(r"(http://[^ ]+/)", self.first_line)
        if not m:
            self.stop()
            raise AssertionError(f"no URL in {self.first_line!r}; log: "
                                 f"{self.log.read_text()[-2000:]}")
        self.url = m.group(1)
        self.api = self.url + "api/v2"

    def _line(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            raise AssertionError("registry-serve printed nothing in "
                                 f"{timeout} s; log: {self.log.read_text()}")
        return self.proc.stdout.readline()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, sig=signal.SIGTERM, timeout: float = 30):
        """Signal the server's process group, as a terminal (Ctrl-C) or
        systemd does; ``(exit code, rest of its output)``."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._log.close()
        return self.proc.returncode, out

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def get(server, path="/dataset-urls", **params):
    return requests.get(server.api + path, params=params, timeout=60)


def assert_envelope(resp, code: int):
    assert resp.status_code == code, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == ENVELOPE_KEYS, body
    assert body["code"] == code
    assert "Traceback" not in body["description"]
    return body


def assert_422(resp, field: str | None = None):
    """Upstream's 422: a JSON array of {loc, msg, type}; ``field``: one of
    them is about that field."""
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert isinstance(body, list) and body, body
    assert all(set(e) == {"loc", "msg", "type"} for e in body)
    if field is not None:
        assert field in [e["loc"][0] for e in body if e["loc"]], body
    return body


def walk_pages(server, **params) -> tuple[list[dict], list[dict]]:
    """Every record of a listing, following next_pg; (records, bodies)."""
    bodies = [get(server, **params).json()]
    while "next_pg" in bodies[-1]:
        r = requests.get(server.url.rstrip("/") + bodies[-1]["next_pg"],
                         timeout=60)
        assert r.status_code == 200, r.text
        bodies.append(r.json())
    return [u for b in bodies for u in b["dataset_urls"]], bodies


def urls(records) -> list[str]:
    return [r["url"] for r in records]


# -- the served registry --------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory, bench_file):
    root = tmp_path_factory.mktemp("serve-api")
    env = serve_env(root)
    registry = root / "registry"
    sync(registry, bench_file, env)
    with ServerProcess(registry, env) as server:
        yield server


# -- listing: shape, links, defaults ---------------------------------------------------

def test_default_listing_shape_and_links(served, bench_records):
    r = get(served)
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["cur_pg_num", "next_pg", "first_pg", "last_pg",
                          "dataset_urls", "collection_stats"]
    assert body["cur_pg_num"] == 1 and "prev_pg" not in body
    assert len(body["dataset_urls"]) == 20
    # upstream: every non-None parameter but page, defaults included
    assert body["first_pg"] == ("/api/v2/dataset-urls?per_page=20&order_by="
                                "last_update_dt&order_dir=desc&page=1")
    assert body["next_pg"].endswith("&page=2")
    assert body["last_pg"].endswith(f"&page={-(-len(bench_records) // 20)}")
    # exclude_none: no null anywhere at the record or statistics level
    for rec in body["dataset_urls"]:
        assert None not in rec.values()
        assert "metadata" not in rec  # only with return_metadata
        assert "path" not in rec      # no server path leaves the server
        assert rec["id"] == record_id(rec["source"], rec["url"])


def test_links_carry_exactly_the_given_parameters(served):
    body = get(served, per_page=2).json()
    for key in ("first_pg", "next_pg", "last_pg"):
        query = parse_qsl(urlsplit(body[key]).query)
        assert [k for k, _ in query] == ["per_page", "order_by", "order_dir",
                                         "page"]
    body = get(served, search="url:github", min_annex_key_count=1, per_page=5,
               page=2, order_by="url", order_dir="asc").json()
    query = parse_qsl(urlsplit(body["prev_pg"]).query)
    assert query == [("search", "url:github"), ("min_annex_key_count", "1"),
                     ("per_page", "5"), ("order_by", "url"),
                     ("order_dir", "asc"), ("page", "1")]
    # a link leads to the page it names
    follow = requests.get(served.url.rstrip("/") + body["next_pg"], timeout=60)
    assert follow.json()["cur_pg_num"] == 3


def test_collection_stats_over_the_whole_collection(served, bench_records):
    body = get(served, per_page=1).json()
    assert body["collection_stats"] == collection_stats(bench_records)
    assert body["collection_stats"]["summary"]["ds_count"] == len(bench_records)
    # filtered: statistics of the filtered collection, not of the page
    wanted = [r for r in bench_records if r.get("git_objects_kb") is not None
              and r["git_objects_kb"] >= 1000]
    body = get(served, per_page=1, min_git_objects_kb=1000).json()
    assert body["collection_stats"] == collection_stats(wanted)
    # ours: left out on request
    assert "collection_stats" not in get(served, collection_stats="false").json()


# -- filters ---------------------------------------------------------------------------

def _ts(value):
    return datetime.fromisoformat(value).timestamp() if value else None


def _filter_cases(records):
    with_ds = next(r for r in records if r.get("ds_id"))
    a_url = records[17]["url"]
    sizes = sorted(r["annexed_files_in_wt_size"] for r in records
                   if r.get("annexed_files_in_wt_size") is not None)
    mid = sizes[len(sizes) // 2]
    dates = sorted(_ts(r.get("last_update_dt")) for r in records
                   if r.get("last_update_dt"))
    cut = dates[len(dates) // 3]
    cut_iso = datetime.fromtimestamp(cut, timezone.utc).isoformat()

    def ge(f, v):
        return lambda r: r.get(f) is not None and r[f] >= v

    def le(f, v):
        return lambda r: r.get(f) is not None and r[f] <= v

    return [
        ({"url": a_url}, lambda r: r["url"] == a_url),
        # exact, but not case-sensitive
        ({"url": a_url.upper()}, lambda r: r["url"] == a_url),
        ({"ds_id": with_ds["ds_id"]},
         lambda r: r.get("ds_id") == with_ds["ds_id"]),
        ({"min_annex_key_count": 20}, ge("annex_key_count", 20)),
        ({"max_annex_key_count": 20}, le("annex_key_count", 20)),
        ({"min_annexed_files_in_wt_count": 100},
         ge("annexed_files_in_wt_count", 100)),
        ({"max_annexed_files_in_wt_count": 100},
         le("annexed_files_in_wt_count", 100)),
        ({"min_annexed_files_in_wt_size": mid},
         ge("annexed_files_in_wt_size", mid)),
        ({"max_annexed_files_in_wt_size": mid},
         le("annexed_files_in_wt_size", mid)),
        ({"min_git_objects_kb": 500}, ge("git_objects_kb", 500)),
        ({"max_git_objects_kb": 500}, le("git_objects_kb", 500)),
        ({"earliest_last_update": cut_iso},
         lambda r: r.get("last_update_dt") and _ts(r["last_update_dt"]) >= cut),
        ({"latest_last_update": cut_iso},
         lambda r: r.get("last_update_dt") and _ts(r["last_update_dt"]) <= cut),
        # a unix time (seconds), as upstream's pydantic accepts
        ({"latest_last_update": int(cut)},
         lambda r: r.get("last_update_dt")
         and _ts(r["last_update_dt"]) <= int(cut)),
        ({"processed": "true"}, lambda r: r.get("processed") is True),
        ({"processed": "false"}, lambda r: r.get("processed") is False),
        # ANDed with each other and with the search
        ({"min_annex_key_count": 5, "max_annex_key_count": 50,
          "processed": "true"},
         lambda r: ge("annex_key_count", 5)(r) and le("annex_key_count", 50)(r)
         and r["processed"]),
        ({"search": "url:github", "min_git_objects_kb": 200},
         lambda r: "github" in r["url"].lower()
         and ge("git_objects_kb", 200)(r)),
    ]


def test_every_filter(served, bench_records):
    for params, keep in _filter_cases(bench_records):
        wanted = sorted(r["url"] for r in bench_records if keep(r))
        body = get(served, per_page=100, order_by="url", order_dir="asc",
                   **params)
        assert body.status_code == 200, (params, body.text)
        body = body.json()
        assert body["collection_stats"]["summary"]["ds_count"] == len(wanted), \
            params
        assert urls(body["dataset_urls"]) == wanted[:100], params
        assert wanted, f"a filter case that matches nothing: {params}"
        # the stream honours the same filters
        lines = requests.get(served.api + "/dataset-urls/all",
                             params=params, timeout=60).text.splitlines()
        assert sorted(json.loads(x)["url"] for x in lines) == wanted, params


def test_cache_path_matches_nothing(served):
    # documented: records here have no clone cache path
    body = get(served, cache_path="8c8/fff/e01f2142d88690d92144b00af0").json()
    assert body["dataset_urls"] == []
    assert body["collection_stats"]["summary"]["ds_count"] == 0
    assert body["last_pg"].endswith("page=1") and "next_pg" not in body


def test_filter_validation(served):
    for params, field in [
            ({"url": "www.example.com"}, "url"), ({"url": "haha/hehe"}, "url"),
            ({"ds_id": "34"}, "ds_id"), ({"processed": "nop"}, "processed"),
            ({"min_annex_key_count": "ten"}, "min_annex_key_count"),
            ({"max_git_objects_kb": str(2 ** 64)}, "max_git_objects_kb"),
            ({"earliest_last_update": "yesterday"}, "earliest_last_update"),
            ({"return_metadata": "all"}, "return_metadata"),
            ({"order_by": "head"}, "order_by"), ({"order_dir": "up"}, "order_dir"),
            ({"page": 0}, "page"), ({"page": -1}, "page"),
            ({"per_page": 0}, "per_page"), ({"per_page": "x"}, "per_page"),
            ({"search": ""}, "search"), ({"search": "   \t \n"}, "search")]:
        assert_422(get(served, **params), field)


# -- search ----------------------------------------------------------------------------

def test_search_and_bad_queries(served, bench_records):
    body = get(served, search="url:openneuro", per_page=100).json()
    wanted = [r for r in bench_records if "openneuro" in r["url"].lower()]
    assert body["collection_stats"]["summary"]["ds_count"] == len(wanted) > 0
    for bad in ["url:", "(haxby", "unknown_field:x", "ds_id:~(",
                "a" * (MAX_QUERY_LENGTH + 1)]:
        with pytest.raises(Exception) as raised:
            parse(bad)
        body = assert_envelope(get(served, search=bad), 400)
        assert body["name"] == "Bad Request"
        # the parser's own message, caret included
        assert body["description"] == str(raised.value)
        assert "^" in body["description"]


# -- ordering and pages ----------------------------------------------------------------

@pytest.mark.parametrize("order_by", ORDER_KEYS)
def test_ordering_nulls_last(served, bench_records, order_by):
    for order_dir in ("asc", "desc"):
        got, _ = walk_pages(served, per_page=100, order_by=order_by,
                            order_dir=order_dir)
        assert urls(got) == urls(order_records(list(bench_records), order_by,
                                               order_dir))
        values = [r.get(order_by) for r in got]
        present = [v for v in values if v is not None]
        assert values == present + [None] * (len(values) - len(present))
        if order_by == "last_update_dt":
            present = [_ts(v) for v in present]
        assert present == sorted(present, reverse=order_dir == "desc")


def test_page_boundaries(served, bench_records):
    n = len(bench_records)
    pages = -(-n // 7)
    got, bodies = walk_pages(served, per_page=7, order_by="url",
                             order_dir="asc")
    assert len(bodies) == pages
    assert urls(got) == sorted(urls(bench_records))  # no gap, no repeat
    assert [b["cur_pg_num"] for b in bodies] == list(range(1, pages + 1))
    last = bodies[-1]
    assert len(last["dataset_urls"]) == n - 7 * (pages - 1)
    assert "next_pg" not in last and last["prev_pg"].endswith(
        f"page={pages - 1}")
    assert all(b["last_pg"].endswith(f"page={pages}") for b in bodies)
    # past the last page: 404, as Flask-SQLAlchemy's paginate answers
    assert_envelope(get(served, per_page=7, page=pages + 1), 404)
    assert_envelope(get(served, page=10 ** 9), 404)
    assert_422(get(served, page=10 ** 9 + 1), "page")
    # an empty result: page 1 exists, and is the last
    body = get(served, search="nosuchwordanywhere").json()
    assert body["dataset_urls"] == [] and body["last_pg"].endswith("page=1")
    assert "next_pg" not in body and "prev_pg" not in body
    assert_envelope(get(served, search="nosuchwordanywhere", page=2), 404)


def test_per_page_is_capped(served):
    body = get(served, per_page=500).json()
    assert len(body["dataset_urls"]) == 100
    # the links say what was asked, as upstream's; the pages are of 100
    assert "per_page=500" in body["next_pg"]
    assert body["last_pg"].endswith("page=10")


# -- metadata --------------------------------------------------------------------------

def test_return_metadata(served, bench_records):
    by_url = {r["url"]: r for r in bench_records}
    ref = get(served, return_metadata="reference", per_page=10).json()
    content = get(served, return_metadata="content", per_page=10).json()
    assert urls(ref["dataset_urls"]) == urls(content["dataset_urls"])
    checked = 0
    for r, c in zip(ref["dataset_urls"], content["dataset_urls"]):
        expected = by_url[r["url"]]["metadata"]
        assert [m["extractor_name"] for m in r["metadata"]] == \
            [m["extractor_name"] for m in expected]
        assert c["metadata"] == expected
        for m, full in zip(r["metadata"], expected):
            assert m["link"].startswith("/api/v2/url-metadata/")
            got = requests.get(served.url.rstrip("/") + m["link"], timeout=60)
            assert got.status_code == 200 and got.json() == full
            checked += 1
    assert checked


# -- one record ---------------------------------------------------------------------------

def test_record_by_id(served, bench_records):
    by_url = {r["url"]: r for r in bench_records}
    listed = get(served, per_page=5, order_by="url").json()["dataset_urls"]
    for rec in listed:
        one = get(served, f"/dataset-urls/{rec['id']}")
        assert one.status_code == 200
        one = one.json()
        # as upstream: the record with its metadata by content
        assert one == dict(rec, metadata=by_url[rec["url"]]["metadata"])
    for bad in ["0", "-1", "abc", "1.5", str(2 ** 48 + 5), "9" * 40,
                str(listed[0]["id"] + 1), "%2e%2e", "..%2f..%2fetc%2fpasswd"]:
        assert_envelope(get(served, f"/dataset-urls/{bad}"), 404)
        assert_envelope(get(served, f"/url-metadata/{bad}"), 404)


# -- everything, streamed -------------------------------------------------------------------

def test_all_streams_json_lines(served, bench_records):
    r = requests.get(served.api + "/dataset-urls/all", stream=True, timeout=60)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["content-disposition"] == \
        "attachment; filename=dataset-urls.jsonl"
    # streamed: no length known up front
    assert "content-length" not in r.headers
    lines = [json.loads(x) for x in r.iter_lines() if x]
    assert sorted(urls(lines)) == sorted(urls(bench_records))
    assert all("metadata" not in x and None not in x.values() for x in lines)
    assert len({x["id"] for x in lines}) == len(lines)
    # ids are the ones the record endpoint answers
    sample = lines[::97]
    for x in sample:
        assert get(served, f"/dataset-urls/{x['id']}").json()["url"] == x["url"]

    with_md = requests.get(served.api + "/dataset-urls/all", timeout=60,
                           params={"search": "haxby",
                                   "return_metadata": "true"})
    by_url = {r["url"]: r for r in bench_records}
    got = [json.loads(x) for x in with_md.text.splitlines()]
    listed = get(served, search="haxby", per_page=1).json()
    assert len(got) == listed["collection_stats"]["summary"]["ds_count"] > 0
    assert all(x["metadata"] == by_url[x["url"]]["metadata"] for x in got)
    assert_envelope(requests.get(served.api + "/dataset-urls/all",
                                 params={"search": "(x"}, timeout=60), 400)
    assert_422(requests.get(served.api + "/dataset-urls/all",
                            params={"search": " "}, timeout=60), "search")


# -- errors, methods ------------------------------------------------------------------------------

def test_error_envelopes_and_methods(served):
    for path in ["/api/", "/api/haha/world", "/api/haha/world/",
                 "/api/v2/nothing"]:
        assert_envelope(requests.get(served.url.rstrip("/") + path,
                                     timeout=60), 404)
    # outside /api/ no envelope
    r = requests.get(served.url + "haha/world", timeout=60)
    assert r.status_code == 404 and not (
        r.headers["content-type"] == "application/json"
        and set(r.json()) == ENVELOPE_KEYS)
    body = assert_envelope(requests.patch(served.api + "/url-metadata/1",
                                          timeout=60), 405)
    assert body["name"] == "Method Not Allowed"
    # read-only by default: upstream's read-only answer
    r = requests.post(served.api + "/dataset-urls",
                      json={"url": "https://example.com/x"}, timeout=60)
    body = assert_envelope(r, 405)
    assert r.headers["allow"] == "GET, HEAD, OPTIONS"
    assert body["description"] == ("This method on the requested resource is "
                                   "not available through a read-only server.")
    # whatever the body: nothing is parsed on a read-only server
    r = requests.post(served.api + "/dataset-urls", data=b"\xff{", timeout=60)
    assert_envelope(r, 405)
    head = requests.head(served.api + "/dataset-urls", timeout=60)
    assert head.status_code == 200 and head.content == b""
    options = requests.options(served.api + "/dataset-urls", timeout=60)
    assert options.status_code == 200
    assert options.headers["allow"] == "GET, HEAD, OPTIONS"


# -- OpenAPI and /docs ------------------------------------------------------------------------------

def test_openapi_describes_the_api(served):
    spec = requests.get(served.url + "openapi.json", timeout=60).json()
    assert spec["info"]["version"] == "2.0"
    paths = spec["paths"]
    assert set(paths) >= {"/api/v2/dataset-urls", "/api/v2/dataset-urls/all",
                          "/api/v2/dataset-urls/{id}",
                          "/api/v2/url-metadata/{url_metadata_id}"}
    names = [p["name"] for p in paths["/api/v2/dataset-urls"]["get"]["parameters"]]
    assert names[:20] == [
        "search", "url", "ds_id", "min_annex_key_count", "max_annex_key_count",
        "min_annexed_files_in_wt_count", "max_annexed_files_in_wt_count",
        "min_annexed_files_in_wt_size", "max_annexed_files_in_wt_size",
        "earliest_last_update", "latest_last_update", "min_git_objects_kb",
        "max_git_objects_kb", "processed", "cache_path", "return_metadata",
        "page", "per_page", "order_by", "order_dir"]
    schemas = spec["components"]["schemas"]
    assert {"DatasetURLPage", "DatasetURLRespModel", "CollectionStats",
            "HTTPExceptionResp", "URLMetadataModel"} <= set(schemas)
    assert "post" in paths["/api/v2/dataset-urls"]


def test_docs_page_is_offline(served):
    html = requests.get(served.url + "docs", timeout=60)
    assert html.status_code == 200
    text = html.text
    # no external host: nothing absolute, nothing protocol-relative
    assert not re.search(r"https?://", text), text
    refs = re.findall(r"""(?:src|href)=["']([^"']+)""", text)
    assert refs and not [u for u in refs if u.startswith("//")]
    assert "'/openapi.json'" in text
    for ref in refs:
        assert requests.get(served.url.rstrip("/") + ref,
                            timeout=60).status_code == 200, ref
    # the validator badge would call validator.swagger.io
    assert '"validatorUrl": null' in text


def test_server_is_still_fine(served):
    # after everything above
    r = get(served, search="haxby")
    assert r.status_code == 200 and r.json()["dataset_urls"]
    assert served.proc.poll() is None
    assert "Traceback" not in served.log.read_text()
    time.sleep(0)
