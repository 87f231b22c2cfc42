"""A few thousand generated requests -- odd parameters, huge values, hostile
queries, unicode, path tricks, every method -- against a real server, in
bounded time. Never a 500, never a traceback, never a file from outside;
every /api/ answer in upstream's forms; and afterwards the server still
answers correctly."""
from __future__ import annotations

import http.client
import json
import random
import time
from urllib.parse import quote, urlsplit

import pytest
import requests

from .test_serve_api import ENVELOPE_KEYS, ServerProcess, serve_env, sync

pytest.importorskip("fastapi")

#: the whole run stays below this (the test's bound is one minute)
BUDGET_SECONDS = 40
MAX_REQUESTS = 3000
MIN_REQUESTS = 300

PARAMS = ["search", "url", "ds_id", "min_annex_key_count",
          "max_annex_key_count", "min_annexed_files_in_wt_count",
          "max_annexed_files_in_wt_count", "min_annexed_files_in_wt_size",
          "max_annexed_files_in_wt_size", "earliest_last_update",
          "latest_last_update", "min_git_objects_kb", "max_git_objects_kb",
          "processed", "cache_path", "return_metadata", "page", "per_page",
          "order_by", "order_dir", "collection_stats", "unknown", "page[]"]

ODD = ["", " ", "\t", "0", "-1", "1", "2", "20", "100", "101", "1e309", "NaN",
       "inf", "-0", "0x10", "9" * 30, str(2 ** 63), str(-2 ** 63 - 1),
       "true", "false", "yes", "nop", "null", "None", "[]", "{}", "asc",
       "desc", "url", "last_update_dt", "reference", "content", "all",
       "2024-01-01", "2024-13-45", "0001-01-01T00:00:00+05:00",
       "9999-12-31T23:59:59-05:00", "656409661000", "1" * 25,
       "2a0b7b7b-8d0e-4a4e-9a8e-1d2f3c4b5a69", "https://github.com/x/y",
       "/etc/passwd", "../../../etc/passwd", "file:///etc/passwd",
       "ß", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "İ", "\u202e", "\ufeff", "\x00", "%00", b"\xed\xa0\x80", b"\xff\xfe",
       "a" * 5000, "<script>alert(1)</script>", "' OR 1=1 --", "${jndi:x}"]

ODD_TEXT = [v for v in ODD if isinstance(v, str)]

QUERIES = [
    "haxby", "NOT haxby", "url:github", 'metadata[bids_dataset]:""',
    "(" * 300 + "x" + ")" * 300, "(" * 50, ")", "NOT " * 500 + "x",
    " OR ".join(["a"] * 600), "url:~(a+)+$", "url:~(a|aa)*b",
    "url:~" + "(" * 40 + "a" + ")" * 40, "metadata[x].a.b.c:~.*",
    "metadata[bids_dataset].Authors:haxby", 'url:"unterminated',
    '"\\"', "url:=", "annex_key_count:>1e400", "last_update_dt:>99999",
    "annexed_files_in_wt_size:>10ZB", "ds_id:~[", "a:b:c", "metadata[]:x",
    "url:" + "x" * 4096, "x" * 4097, "subds_id:" + "9" * 100, "*", "?",
    "\u0000", "ﬀ", "ǅ", "\U0001F600", "url:%", "extraction_failures:\"\"",
    "head_dt:2024", "AND", "OR OR", "NOT", "(", '"', "''",
]

PATHS = [
    "/api/v2/dataset-urls/..%2f..%2fetc%2fpasswd",
    "/api/v2/dataset-urls/../../etc/passwd", "/api/v2/../../etc/passwd",
    "/api/v2/dataset-urls/%00", "/api/v2/dataset-urls/%2e%2e",
    "/api/v2/url-metadata/..%5c..%5cwindows", "//api//v2//dataset-urls",
    "/api/v2/dataset-urls/1/2", "/api/v2/dataset-urls//", "/api/v2/dataset-urls/",
    "/static/../../../../etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/docs/assets/../../../../../etc/passwd",
    "/docs/assets/..%2f..%2f..%2f..%2fetc%2fpasswd", "/docs/assets/%2e%2e/x",
    "/api/v2/dataset-urls/all/../all", "/openapi.json/../../etc/passwd",
    "/api/v2/dataset-urls?" + "&".join(f"p{i}=1" for i in 300 * [0]),
    "/api/v2/dataset-urls/" + "9" * 200, "/api/v2/url-metadata/-5",
    "/api/v2/dataset-urls/%F0%9F%98%80", "/%ff%fe", "/api/%ff",
]


def _random_params(rng: random.Random) -> dict:
    params = {}
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(PARAMS)
        params[name] = rng.choice(QUERIES) if name == "search" and \
            rng.random() < 0.7 else rng.choice(ODD)
    return params


def _check_api_answer(status: int, ctype: str, body: bytes, what):
    if status == 307 and what[1].endswith("/"):
        return  # Starlette's redirect to the path without the slash
    assert status in (200, 400, 404, 405, 422), (status, what, body[:300])
    if what[0] == "HEAD":
        assert body == b"", what
        return
    if status == 200:
        if ctype.startswith("application/x-ndjson"):
            for line in body.splitlines():
                json.loads(line)
        elif body:  # HEAD has none
            json.loads(body)
        return
    doc = json.loads(body)
    if status == 422:
        assert isinstance(doc, list) and all(
            set(e) == {"loc", "msg", "type"} for e in doc), (what, doc)
    else:
        assert set(doc) == ENVELOPE_KEYS and doc["code"] == status, (what, doc)


@pytest.fixture(scope="module")
def served(tmp_path_factory, bench_file):
    root = tmp_path_factory.mktemp("serve-fuzz")
    env = serve_env(root)
    registry = root / "registry"
    sync(registry, bench_file, env)
    with ServerProcess(registry, env) as server:
        yield server


def test_fuzz(served, bench_records):
    rng = random.Random(20260724)
    parts = urlsplit(served.url)
    raw = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    session = requests.Session()
    start = time.monotonic()
    done, statuses = 0, {}
    while done < MAX_REQUESTS and time.monotonic() - start < BUDGET_SECONDS:
        kind = rng.random()
        if kind < 0.55:
            path = rng.choice(["/dataset-urls", "/dataset-urls",
                               "/dataset-urls/all"])
            method = rng.choice(["GET"] * 8 + ["HEAD", "OPTIONS"])
            r = session.request(method, served.api + path,
                                params=_random_params(rng), timeout=60)
            what = (method, path, r.url[:300])
            _check_api_answer(r.status_code, r.headers.get("content-type", ""),
                              r.content, what)
            status = r.status_code
        elif kind < 0.75:
            ident = rng.choice(ODD + [str(rng.getrandbits(48))])
            path = rng.choice(["/dataset-urls/", "/url-metadata/"]) + \
                quote(ident, safe="")
            method = rng.choice(["GET", "GET", "HEAD", "PUT", "DELETE",
                                 "PATCH", "POST"])
            r = session.request(method, served.api + path, timeout=60)
            _check_api_answer(r.status_code, r.headers.get("content-type", ""),
                              r.content, (method, path))
            status = r.status_code
        elif kind < 0.85:
            body = rng.choice([b"", b"{", b"[]", b'{"url": 1}', b"\xff\xfe",
                               json.dumps({"url": rng.choice(ODD_TEXT)}).encode(),
                               b'{"url": "' + b"a" * 100000 + b'"}'])
            r = session.post(served.api + "/dataset-urls", data=body,
                             headers={"content-type": rng.choice(
                                 ["application/json", "text/plain",
                                  "application/x-www-form-urlencoded"])},
                             timeout=60)
            # read-only: every submission is refused the same way
            assert r.status_code == 405, r.text
            _check_api_answer(405, r.headers["content-type"], r.content,
                              ("POST",))
            status = r.status_code
        else:
            path = rng.choice(PATHS)
            method = rng.choice(["GET", "GET", "HEAD", "POST", "OPTIONS"])
            raw.request(method, path)
            resp = raw.getresponse()
            body = resp.read()
            status = resp.status
            assert status < 500, (method, path, body[:300])
            assert b"root:" not in body and b"Traceback" not in body, path
            if path.startswith("/api/") and status != 400:
                _check_api_answer(status, resp.getheader("content-type", ""),
                                  body, (method, path))
            if resp.getheader("connection", "") == "close":
                raw.close()
                raw = http.client.HTTPConnection(parts.hostname, parts.port,
                                                 timeout=60)
        statuses[status] = statuses.get(status, 0) + 1
        done += 1
    raw.close()
    print(f"{done} requests in {time.monotonic() - start:.1f} s: {statuses}")
    assert done >= MIN_REQUESTS, f"only {done} requests in the time budget"
    # every kind of answer was exercised
    assert {200, 400, 404, 405, 422} <= set(statuses), statuses
    assert 500 not in statuses

    # the server still answers, and correctly
    assert served.proc.poll() is None
    body = session.get(served.api + "/dataset-urls", params={"per_page": 3},
                       timeout=60).json()
    assert body["collection_stats"]["summary"]["ds_count"] == len(bench_records)
    wanted = sum("openneuro" in r["url"].lower() for r in bench_records)
    body = session.get(served.api + "/dataset-urls",
                       params={"search": "url:openneuro"}, timeout=60).json()
    assert body["collection_stats"]["summary"]["ds_count"] == wanted
    log = served.log.read_text()
    assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]
