"""DataLad-Registry services over HTTP: recognise one, read its records,
search it, submit URLs to it.

A *service* is anything that speaks DataLad-Registry's API v2:
registry.datalad.org, another DataLad-Registry deployment, or
``datalad registry-serve``. It is named by its *base* URL (scheme, host,
port and any path prefix, without ``/api/v2``); :func:`api_base` turns every
spelling of it (a trailing slash, the ``/api/v2`` or ``/api/v2/dataset-urls``
suffix, credentials) into that one base.

A service is recognised by its answers, not by its URL: :meth:`Service.probe`
asks ``GET {base}/api/v2/dataset-urls?per_page=1`` and checks that the answer
has the shape of a page of DataLad-Registry (``dataset_urls``,
``cur_pg_num``, ``collection_stats.summary.ds_count``).

Every request has connect and read time-outs
(``datalad.registry.http-timeout``); connection errors, time-outs, 429 and
5xx answers are retried a few times with exponential back-off, honouring a
``Retry-After`` up to :data:`MAX_WAIT` seconds. Answers are read up to
``datalad.registry.response-max-bytes``. Redirects are followed up to
:data:`MAX_REDIRECTS` times (a loop is an error); requests drops the
``Authorization`` header when a redirect leaves the host, and page links are
never followed to another host: the page number is taken from them and asked
of the same service.

Tokens (:func:`token_for`) come from the environment or DataLad's
credential store (never asked for) and travel in the
``Authorization: Bearer`` header. They are never written anywhere, and every
message built from a server's answer has them replaced by ``***``.

Every failure is a :class:`RemoteError` whose message names the service and
the request (``page 3``, ``the record stream``); nothing here knows about
DataLad's interface or the registry's storage.
"""
from __future__ import annotations

import email.utils
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import IO, Callable
from urllib.parse import parse_qs, urljoin, urlsplit, urlunsplit

import requests
from datalad import cfg

from datalad_registry_ext import __version__, config
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.records import loads_strict, scrub, strip_credentials

API = "/api/v2"
LIST = API + "/dataset-urls"
#: the JSON Lines stream of every record (datalad-registry PR #412, and
#: registry-serve)
STREAM = LIST + "/all"
#: records per page when paging (DataLad-Registry's maximum)
PER_PAGE = 100
#: ids per ``/all?ids=`` request (registry-serve's cap, server.listing)
BATCH_IDS = 200
#: attempts per request (connection errors, time-outs, 429, 5xx)
ATTEMPTS = 4
#: seconds before the first retry; doubled for each further one
BACKOFF = 1.0
#: the longest Retry-After (seconds) that is waited for
MAX_WAIT = 120
MAX_REDIRECTS = 10
#: how a token is given: per source first, then for every service
TOKEN_ENV = "DATALAD_REGISTRY_TOKEN"
#: DataLad's credential (a ``Token``, its field ``token``) of every
#: service; a source's own is ``datalad-registry-<name>``
CREDENTIAL = "datalad-registry"
_CHUNK = 1024 * 1024


class RemoteError(RegistryExtError):
    """A service cannot be reached or gave an answer we cannot use."""


class NotAService(RemoteError):
    """The URL does not answer like a DataLad-Registry API."""
    status = "impossible"


class Refused(RemoteError):
    """The service understood the request and refused it (4xx)."""

    def __init__(self, message: str, code: int, description: str = ""):
        super().__init__(message)
        self.code = code
        self.description = description


# -- names, URLs, tokens ------------------------------------------------------------

def is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def api_base(url: str) -> str:
    """The one spelling of a service's URL: no credentials, lower-case
    scheme and host, no default port, no trailing slash, no
    ``/api/v2[/dataset-urls]``."""
    parts = urlsplit(strip_credentials(url.strip()))
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{scrub(url)} is not an http(s) URL")
    path = parts.path.rstrip("/")
    for suffix in (STREAM, LIST, API):
        if path.endswith(suffix):
            path = path[: -len(suffix)].rstrip("/")
            break
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    # the default port is the same service (http://h:80 is http://h)
    netloc = re.sub(r":(80)$" if scheme == "http" else r":(443)$", "",
                    netloc)
    return urlunsplit((scheme, netloc, path, "", ""))


def default_name(base: str) -> str:
    """A service's default source name: its host, with the port if any."""
    return urlsplit(base).netloc.lower()


def token_variable(name: str) -> str:
    """The environment variable of a source's own token:
    ``DATALAD_REGISTRY_TOKEN_<NAME>``, the name upper-cased, every other
    character than a letter or digit an underscore."""
    return f"{TOKEN_ENV}_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def credential_name(name: str) -> str:
    """The DataLad credential of a source's own token:
    ``datalad-registry-<name>``, the name as it is."""
    return f"{CREDENTIAL}-{name}"


def _stored_token(credential: str) -> str | None:
    """The field ``token`` of DataLad's credential ``credential`` (its
    keyring, or the setting ``datalad.credential.<credential>.token``),
    read without ever asking for it: None when there is none or the
    keyring cannot be read."""
    from datalad.downloaders.credentials import Token
    try:
        # Token.get reads only; calling the credential would prompt
        value = Token(credential).get("token")
    except Exception:
        return None
    value = value.strip() if isinstance(value, str) else ""
    return value or None


def find_token(name: str | None) -> tuple[str | None, str | None]:
    """The token for the source ``name`` and where it was found (the
    variable's or the credential's name, never the token), the first of:
    ``DATALAD_REGISTRY_TOKEN_<NAME>``, the credential
    ``datalad-registry-<name>``, ``DATALAD_REGISTRY_TOKEN``, the credential
    ``datalad-registry``; (None, None) without one."""
    places: list[tuple[str, Callable[[], str | None]]] = []
    if name:
        places += [(token_variable(name),
                    lambda: os.environ.get(token_variable(name))),
                   (credential_name(name),
                    lambda: _stored_token(credential_name(name)))]
    places += [(TOKEN_ENV, lambda: os.environ.get(TOKEN_ENV)),
               (CREDENTIAL, lambda: _stored_token(CREDENTIAL))]
    for where, read in places:
        value = (read() or "").strip()
        if value:
            return value, where
    return None, None


def token_for(name: str | None) -> str | None:
    """The token for the source ``name`` (see :func:`find_token`), or
    None."""
    return find_token(name)[0]


# -- answers ----------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes
    url: str


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP
    date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


_UNRESOLVED = "the host name cannot be resolved"


def _reason(e: BaseException) -> str:
    """A short reason for a requests exception (the innermost cause)."""
    text = str(e)
    m = re.search(r"\]\s*([^'\]\)]+)'?\)+$", text)
    if isinstance(e, requests.Timeout):
        return "timed out"
    if "Name or service not known" in text or "nodename nor servname" in text \
            or "NameResolutionError" in text or "getaddrinfo failed" in text:
        return _UNRESOLVED
    if "Connection refused" in text:
        return "connection refused"
    if isinstance(e, requests.exceptions.ChunkedEncodingError) \
            or "IncompleteRead" in text or "Connection broken" in text:
        return "the connection broke off mid-answer"
    return m[1].strip() if m else (text or type(e).__name__)


def page_problem(obj) -> str | None:
    """What is wrong with a page of DataLad-Registry's list endpoint, or
    None when it has the expected shape."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if not isinstance(obj.get("dataset_urls"), list):
        return "it has no 'dataset_urls' list"
    if not isinstance(obj.get("cur_pg_num"), int):
        return "it has no page number ('cur_pg_num')"
    if total_of(obj) is None:
        return "it has no total ('collection_stats.summary.ds_count')"
    if obj.get("next_pg") is not None and not isinstance(obj["next_pg"], str):
        return "its 'next_pg' is not a link"
    return None


def total_of(page: dict) -> int | None:
    try:
        n = page["collection_stats"]["summary"]["ds_count"]
    except (KeyError, TypeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 \
        else None


def _page_number(link: str) -> int | None:
    try:
        values = parse_qs(urlsplit(link).query).get("page")
        return int(values[0]) if values else None
    except (ValueError, TypeError):
        return None


@dataclass
class Download:
    """What :meth:`Service.download` wrote: how many records, from where."""
    records: int = 0
    total: int = 0
    how: str = "stream"   # "stream" (/all) or "pages"
    #: ``(first line, page number)`` of each page (paging only)
    pages: list[tuple[int, int]] = field(default_factory=list)
    #: why the stream was not used
    note: str | None = None

    def where(self, line: int) -> str:
        """``page 3, record 7`` (paging) or ``record 12`` for a line of the
        downloaded JSON Lines file."""
        if self.how == "pages":
            for first, page in reversed(self.pages):
                if line >= first:
                    return f"page {page}, record {line - first + 1}"
        return f"record {line}"


# -- the service ----------------------------------------------------------------------

class Service:
    """One DataLad-Registry API, reached over HTTP.

    ``label`` names it in messages (default: its base URL); ``token`` is
    sent as ``Authorization: Bearer``.
    """

    def __init__(self, url: str, *, token: str | None = None,
                 label: str | None = None, name: str | None = None):
        self.base = api_base(url)
        self.name = name
        self.label = label or self.base
        self._token = token or None
        self.session = requests.Session()
        self.session.max_redirects = MAX_REDIRECTS
        self.session.headers.update({
            "User-Agent": f"datalad-registry-ext/{__version__}",
            "Accept": "application/json"})
        if self._token:
            self.session.headers["Authorization"] = f"Bearer {self._token}"
        self.timeout = float(cfg.obtain(config.HTTP_TIMEOUT))
        self.cap = int(cfg.obtain(config.RESPONSE_MAX_BYTES))
        self.sleep = time.sleep
        #: what was transferred: requests sent (every attempt) and bytes
        #: of answers received (bodies, as decoded), for the sync's result
        self.requests = 0
        self.retries = 0   # requests that repeated a failed one
        self.received = 0

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- messages -----------------------------------------------------------------
    def _clean(self, text: str) -> str:
        """A message without credentials or our token."""
        if self._token:
            text = text.replace(self._token, "***")
        return scrub(text)

    def error(self, what: str, problem: str, cls=RemoteError, **kw
              ) -> RemoteError:
        return cls(self._clean(f"{self.label}: {what}: {problem}"), **kw)

    # -- requests ------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return self.base + path

    def _send(self, method: str, url: str, what: str, *, params=None,
              body=None, stream: bool = False, headers=None
              ) -> requests.Response:
        """One request, retried on connection errors, time-outs, 429 and
        5xx; the response of the last attempt whatever its status."""
        delay = BACKOFF
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            self.requests += 1
            if attempt > 1:
                self.retries += 1
            try:
                resp = self.session.request(
                    method, url, params=params, json=body, stream=True,
                    headers=headers,
                    timeout=(min(self.timeout, 30.0), self.timeout))
            except requests.TooManyRedirects:
                raise self.error(what, "the service redirects in a loop "
                                 f"(more than {MAX_REDIRECTS} redirects)")
            except (requests.ConnectionError, requests.Timeout) as e:
                reason = _reason(e)
                if reason == _UNRESOLVED:  # not worth waiting for
                    raise self.error(what, f"cannot reach it: {reason}") \
                        from None
                if last:
                    raise self.error(what, f"cannot reach it: {reason} "
                                     f"(tried {ATTEMPTS} times)") from None
                self.sleep(delay)
                delay *= 2
                continue
            except requests.RequestException as e:
                raise self.error(what, f"the request failed: {_reason(e)}") \
                    from None
            if not last and (resp.status_code == 429
                             or resp.status_code >= 500):
                wait = _retry_after(resp.headers.get("Retry-After"))
                resp.close()
                if wait is not None and wait > MAX_WAIT:
                    raise self.error(
                        what, f"the service is busy (HTTP "
                        f"{resp.status_code}) and asks to wait {wait:.0f} s; "
                        "try again later")
                self.sleep(delay if wait is None else wait)
                delay *= 2
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, resp: requests.Response, what: str) -> bytes:
        """The whole body, up to the size cap."""
        too_big = self.error(
            what, f"the answer is larger than {self.cap} bytes "
            f"({config.RESPONSE_MAX_BYTES})")
        try:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > self.cap:
                raise too_big
            chunks, n = [], 0
            for chunk in self._chunks(resp):
                n += len(chunk)
                if n > self.cap:
                    raise too_big
                chunks.append(chunk)
            return b"".join(chunks)
        except requests.RequestException as e:
            raise _Retryable(_reason(e)) from None
        finally:
            resp.close()

    def _chunks(self, resp: requests.Response):
        """The body of ``resp``, a chunk at a time, counted."""
        for chunk in resp.iter_content(_CHUNK):
            self.received += len(chunk)
            yield chunk

    def exchange(self, method: str, url: str, what: str, *, params=None,
                 body=None) -> Answer:
        """A request and its whole answer (any status), retried also when
        the connection breaks while the answer is read."""
        for attempt in range(1, ATTEMPTS + 1):
            resp = self._send(method, url, what, params=params, body=body)
            try:
                data = self._read(resp, what)
            except _Retryable as e:
                if attempt == ATTEMPTS:
                    raise self.error(what, f"{e} (tried {ATTEMPTS} times)") \
                        from None
                self.retries += 1  # the next attempt asks again
                self.sleep(BACKOFF * 2 ** (attempt - 1))
                continue
            return Answer(resp.status_code, dict(resp.headers), data,
                          resp.url)
        raise AssertionError("unreachable")  # pragma: no cover

    def decode(self, answer: Answer, what: str, cls=RemoteError):
        """The answer's JSON; an HTML page or invalid JSON is an error."""
        try:
            return _parse(answer)
        except _Unusable as e:
            raise self.error(what, str(e), cls) from None

    def auth_hint(self) -> str:
        """What to do about a 401/403: where the refused token came from,
        or how to give one (never the token itself)."""
        if self._token:
            token, where = find_token(self.name)
            return "the service does not accept the token given" + (
                f" (from {where})" if where and token == self._token else "")
        variable = token_variable(self.name) if self.name else TOKEN_ENV
        credential = credential_name(self.name) if self.name else CREDENTIAL
        return (f"the service wants a token; set {variable}, or store it "
                f"as DataLad's credential {credential}: python -c \"from "
                f"datalad.downloaders.credentials import Token; "
                f"Token('{credential}').enter_new()\"")

    def refusal(self, answer: Answer, what: str) -> Refused:
        """The error for a 4xx/5xx answer, with the server's own message
        (its error envelope's ``description``)."""
        description = self._clean(server_message(answer.body))
        text = f"HTTP {answer.status}"
        if description:
            text += f": {description}"
        if answer.status in (401, 403):
            text += f"; {self.auth_hint()}"
        return self.error(what, text, Refused, code=answer.status,
                          description=description)

    def get_json(self, path: str, what: str, params=None):
        answer = self.exchange("GET", self._url(path), what, params=params)
        if answer.status != 200:
            raise self.refusal(answer, what)
        return self.decode(answer, what)

    # -- the list endpoint -----------------------------------------------------
    def probe(self, query: str | None = None) -> dict:
        """The first page (one record) of the list endpoint: proves that
        this is a DataLad-Registry API and gives the total. NotAService
        when it is not one; Refused when it refuses the query."""
        what = "the API probe (GET .../api/v2/dataset-urls)"
        params = {"per_page": 1}
        if query and query.strip():
            params["search"] = query
        answer = self.exchange("GET", self._url(LIST), what, params=params)
        if answer.status in (400, 422) and "search" in params:
            raise self.refusal(answer, "the query")
        if answer.status in (401, 403):
            raise self.error(what, f"HTTP {answer.status}: {self.auth_hint()}")
        if answer.status != 200:
            description = self._clean(server_message(answer.body))
            raise NotAService(self._clean(
                f"{self.label} is not a DataLad-Registry API: {what} "
                f"answered HTTP {answer.status}"
                + (f" ({description})" if description else "")))
        try:
            obj = _parse(answer)
        except _Unusable as e:
            raise NotAService(self._clean(
                f"{self.label} is not a DataLad-Registry API: {what}: {e}")) \
                from None
        problem = page_problem(obj)
        if problem:
            raise NotAService(self._clean(
                f"{self.label} is not a DataLad-Registry API: {what} "
                f"answered JSON that is not a page of records ({problem})"))
        return obj

    def download(self, out: IO[bytes], query: str | None = None, *,
                 first: dict | None = None, max_bytes: int | None = None,
                 progress: Callable[[int, int], None] | None = None
                 ) -> Download:
        """Write every record (matching ``query``), with metadata content,
        to ``out`` as JSON Lines. Uses the record stream where the service
        has one, else pages. Raises RemoteError when the download is not
        complete and consistent: nothing written to ``out`` may then be
        used."""
        first = first or self.probe(query)
        total = total_of(first)
        if progress:
            progress(0, total)
        got = self._stream(out, query, total, max_bytes, progress)
        if isinstance(got, Download):
            return got
        out.seek(0)
        out.truncate()
        got_pages = self._pages(out, query, total, max_bytes, progress)
        got_pages.note = got
        return got_pages

    def _stream(self, out, query, total, max_bytes, progress):
        """The record stream into ``out``: a Download, or why it was not
        used (the service has none, or ignores the query)."""
        what = "the record stream (GET .../dataset-urls/all)"
        params = {"return_metadata": "true"}
        if query and query.strip():
            params["search"] = query
        for attempt in range(1, ATTEMPTS + 1):
            resp = self._send("GET", self._url(STREAM), what, params=params)
            if resp.status_code in (404, 405, 501):
                resp.close()
                return "the service has no record stream"
            if resp.status_code != 200:
                answer = Answer(resp.status_code, dict(resp.headers),
                                self._read_quietly(resp), resp.url)
                raise self.refusal(answer, what)
            ctype = resp.headers.get("Content-Type", "").lower()
            if "html" in ctype:
                resp.close()
                raise self.error(what, "the answer is an HTML page, not "
                                 "JSON Lines")
            out.seek(0)
            out.truncate()
            try:
                n = self._copy_lines(resp, out, total, max_bytes, progress,
                                     what, query)
            except _Retryable as e:
                if attempt == ATTEMPTS:
                    raise self.error(what, f"{e} (tried {ATTEMPTS} times); "
                                     "nothing was imported") from None
                self.retries += 1  # the next attempt asks again
                self.sleep(BACKOFF * 2 ** (attempt - 1))
                continue
            finally:
                resp.close()
            if n is None:
                return "the record stream ignores the query"
            if n != total:
                raise self.error(
                    what, f"the stream ended after {n} of the {total} records "
                    "the service announced; nothing was imported (run "
                    "registry-sync again)")
            return Download(records=n, total=total, how="stream")
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_quietly(self, resp) -> bytes:
        try:
            return self._read(resp, "")
        except (RemoteError, _Retryable):
            return b""

    def _copy_lines(self, resp, out, total, max_bytes, progress, what,
                    query) -> int | None:
        """Copy the stream to ``out``; the number of records (non-blank
        lines), or None when more come than a query's total (the service
        ignores the query)."""
        count, size, pending = 0, 0, False
        shown = time.monotonic()
        try:
            for chunk in self._chunks(resp):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise self.error(
                        what, f"the stream holds more than {max_bytes} bytes "
                        f"({config.IMPORT_MAX_BYTES}); nothing was imported")
                out.write(chunk)
                parts = chunk.split(b"\n")
                for i, part in enumerate(parts):
                    if part.strip():
                        pending = True
                    if i < len(parts) - 1:
                        count += pending
                        pending = False
                if count > total:
                    if query and query.strip():
                        return None
                    raise self.error(
                        what, f"the stream holds more records than the "
                        f"{total} the service announced (the total changed "
                        "during the sync); nothing was imported (run "
                        "registry-sync again)")
                if progress and time.monotonic() - shown > 0.2:
                    progress(count, total)
                    shown = time.monotonic()
        except requests.RequestException as e:
            raise _Retryable(_reason(e)) from None
        if pending:
            count += 1
            out.write(b"\n")
        if progress:
            progress(count, total)
        return count

    def _pages(self, out, query, total, max_bytes, progress, *,
               metadata: str = "content") -> Download:
        """Every page into ``out`` (records with ``metadata`` content or
        references); ``total`` None: the first page's."""
        params = {"return_metadata": metadata, "per_page": PER_PAGE,
                  "order_by": "url", "order_dir": "asc"}
        if query and query.strip():
            params["search"] = query
        got = Download(total=total, how="pages")
        seen: dict[tuple, int] = {}
        line, size, number = 1, 0, 1
        while True:
            what = f"page {number}"
            obj = self.get_json(LIST, what, dict(params, page=number))
            problem = page_problem(obj)
            if problem:
                raise self.error(what, f"not a page of records ({problem})")
            if obj["cur_pg_num"] != number:
                raise self.error(what, f"the service answered with page "
                                 f"{obj['cur_pg_num']} instead")
            if total is None:
                total = got.total = total_of(obj)
            if total_of(obj) != total:
                raise self.error(
                    what, f"the total changed from {total} to "
                    f"{total_of(obj)} during the sync; nothing was imported "
                    "(run registry-sync again)")
            records = obj["dataset_urls"]
            key = tuple(r.get("url") if isinstance(r, dict) else repr(r)
                        for r in records)
            if records and key in seen:
                raise self.error(what, f"it repeats page {seen[key]}; "
                                 "nothing was imported")
            seen[key] = number
            got.pages.append((line, number))
            for rec in records:
                text = (json.dumps(rec, ensure_ascii=False) + "\n").encode(
                    "utf-8", "surrogatepass")
                size += len(text)
                if max_bytes is not None and size > max_bytes:
                    raise self.error(
                        what, f"the records hold more than {max_bytes} bytes "
                        f"({config.IMPORT_MAX_BYTES}); nothing was imported")
                out.write(text)
                line += 1
            got.records += len(records)
            if progress:
                progress(min(got.records, total), total)
            link = obj.get("next_pg")
            if not link:
                break
            following = _page_number(link)
            if following != number + 1:
                raise self.error(
                    what, f"its link to the next page ({_short(link)}) "
                    f"does not point to page {number + 1}; nothing was "
                    "imported")
            if not records:
                raise self.error(what, "it is empty but links to a next "
                                 "page; nothing was imported")
            number += 1
        if got.records != total:
            raise self.error(
                f"page {number}", f"the pages held {got.records} records, "
                f"but the service announced {total} (a page missing?); "
                "nothing was imported (run registry-sync again)")
        return got

    # -- what changed (incremental syncs) --------------------------------------
    def digests(self, query: str | None = None, etag: str | None = None, *,
                on_answer: Callable[[], None] | None = None
                ) -> "Digests | None":
        """The service's ``{url: (id, digest)}`` of every record (matching
        ``query``), from ``/all?digests=true`` (registry-serve); with
        ``etag``, asked conditionally: ``Digests(unchanged=True)`` when the
        collection is the one that tag names. None when the service has no
        digests (DataLad-Registry: no ``/all``, or one that ignores the
        parameter and streams records -- abandoned at its first line).
        ``on_answer()`` is called when the digests begin to arrive (not
        for a 304): work that needs them changed can start meanwhile."""
        what = "the record digests (GET .../dataset-urls/all?digests=true)"
        params = {"digests": "true"}
        if query and query.strip():
            params["search"] = query
        headers = {"If-None-Match": etag} if etag else None
        for attempt in range(1, ATTEMPTS + 1):
            resp = self._send("GET", self._url(STREAM), what, params=params,
                              headers=headers)
            try:
                if resp.status_code == 304:
                    return Digests(etag=etag, unchanged=True)
                if resp.status_code in (404, 405, 501):
                    return None
                if resp.status_code != 200:
                    answer = Answer(resp.status_code, dict(resp.headers),
                                    self._read_quietly(resp), resp.url)
                    raise self.refusal(answer, "the query" if
                                       resp.status_code in (400, 422)
                                       else what)
                if "html" in resp.headers.get("Content-Type", "").lower():
                    raise self.error(what, "the answer is an HTML page, not "
                                     "JSON Lines")
                got = Digests(etag=resp.headers.get("ETag"))
                if on_answer is not None:
                    on_answer()
                    on_answer = None  # once, whatever the attempts
                if not self._digest_lines(resp, got, what):
                    return None
                return got
            except _Retryable as e:
                if attempt == ATTEMPTS:
                    raise self.error(what, f"{e} (tried {ATTEMPTS} times); "
                                     "nothing was imported") from None
                self.retries += 1  # the next attempt asks again
                self.sleep(BACKOFF * 2 ** (attempt - 1))
            finally:
                resp.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _json_lines(self, resp, what: str):
        """``(line number, object or None)`` of each non-blank line of a
        JSON Lines answer, within the answer size cap; a line that is not
        JSON comes as None. Network errors are retried by the caller; a
        stream ending mid-line too."""
        pending, n, size = b"", 0, 0
        try:
            for chunk in self._chunks(resp):
                size += len(chunk)
                if size > self.cap:
                    raise self.error(
                        what, f"the answer is larger than {self.cap} bytes "
                        f"({config.RESPONSE_MAX_BYTES})")
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    if not line.strip():
                        continue
                    n += 1
                    try:
                        obj = loads_strict(line)
                    except (ValueError, UnicodeDecodeError, RecursionError):
                        obj = None
                    yield n, obj
        except requests.RequestException as e:
            raise _Retryable(_reason(e)) from None
        if pending.strip():
            raise _Retryable("the stream ended mid-line")

    def _digest_lines(self, resp, got: "Digests", what: str) -> bool:
        """Read digest lines into ``got``; False at a first line that is
        not one (a record: the service ignores ``digests``)."""
        for n, obj in self._json_lines(resp, what):
            if n == 1 and not (isinstance(obj, dict) and "digest" in obj):
                return False
            if not (isinstance(obj, dict)
                    and isinstance(obj.get("url"), str)
                    and isinstance(obj.get("digest"), str)
                    and (obj.get("id") is None or (
                        isinstance(obj["id"], int)
                        and not isinstance(obj["id"], bool)))):
                raise self.error(what, f"line {n} is not a record "
                                 "digest; nothing was imported")
            got.entries[obj["url"]] = (obj.get("id"), obj["digest"])
        return True

    def light_pages(self, out, query: str | None = None, *,
                    max_bytes: int | None = None,
                    progress: Callable[[int, int], None] | None = None
                    ) -> Download:
        """Every record (matching ``query``) with metadata *references*
        (``return_metadata=reference``), page by page into ``out`` as JSON
        Lines: what DataLad-Registry can tell about changes, for a fraction
        of the bytes of the records with metadata content."""
        return self._pages(out, query, None, max_bytes, progress,
                           metadata="reference")

    def fetch(self, ids, progress: Callable[[int, int], None] | None = None,
              *, batch: bool = False) -> dict:
        """``{id: record with metadata content, or None when the service
        has no such record (any more)}``: ``GET /dataset-urls/{id}`` each,
        as DataLad-Registry answers them too; with ``batch``, first
        :data:`BATCH_IDS` at a time from ``GET /all?ids=...``
        (registry-serve), one by one only where the service does not
        answer that."""
        ids = list(dict.fromkeys(ids))
        out = {}
        if batch:
            for start in range(0, len(ids), BATCH_IDS):
                got = self._fetch_batch(ids[start:start + BATCH_IDS])
                if got is None:  # not ours, or too old: one by one
                    break
                out.update(got)
                if progress:
                    progress(len(out), len(ids))
        done = len(out)
        for i, id_ in enumerate([i for i in ids if i not in out], done + 1):
            what = f"record {id_} (GET .../dataset-urls/{id_})"
            answer = self.exchange("GET", self._url(f"{LIST}/{int(id_)}"),
                                   what)
            if answer.status == 404:
                out[id_] = None
            elif answer.status != 200:
                raise self.refusal(answer, what)
            else:
                obj = self.decode(answer, what)
                if not isinstance(obj, dict) or not isinstance(
                        obj.get("url"), str):
                    raise self.error(what, "the answer is not a record; "
                                     "nothing was imported")
                out[id_] = obj
            if progress:
                progress(i, len(ids))
        return out

    def _fetch_batch(self, ids: list) -> dict | None:
        """``{id: record or None}`` from one ``GET /all?ids=...``; None when
        the service does not answer it: no ``/all`` (404), an ``ids`` it
        refuses (400, 422), or one it ignores -- a stream of every record,
        abandoned at its first record that was not asked for."""
        what = (f"records {ids[0]} and {len(ids) - 1} more (GET "
                ".../dataset-urls/all?ids=...)" if len(ids) > 1 else
                f"record {ids[0]} (GET .../dataset-urls/all?ids=...)")
        params = {"ids": ",".join(str(int(i)) for i in ids),
                  "return_metadata": "true"}
        for attempt in range(1, ATTEMPTS + 1):
            resp = self._send("GET", self._url(STREAM), what, params=params)
            try:
                if resp.status_code in (400, 404, 405, 422, 501):
                    return None
                if resp.status_code != 200:
                    answer = Answer(resp.status_code, dict(resp.headers),
                                    self._read_quietly(resp), resp.url)
                    raise self.refusal(answer, what)
                if "html" in resp.headers.get("Content-Type", "").lower():
                    raise self.error(what, "the answer is an HTML page, not "
                                     "JSON Lines")
                got = self._record_lines(resp, set(ids), what)
                if got is None:
                    return None
                # absent: unknown to the service, as a 404 of GET /{id}
                return {i: got.get(i) for i in ids}
            except _Retryable as e:
                if attempt == ATTEMPTS:
                    raise self.error(what, f"{e} (tried {ATTEMPTS} times); "
                                     "nothing was imported") from None
                self.retries += 1  # the next attempt asks again
                self.sleep(BACKOFF * 2 ** (attempt - 1))
            finally:
                resp.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _record_lines(self, resp, wanted: set, what: str) -> dict | None:
        """``{id: record}`` of a JSON Lines answer of records with ids in
        ``wanted``; None at a record with another id (the service ignores
        ``ids``)."""
        got = {}
        for n, obj in self._json_lines(resp, what):
            if not (isinstance(obj, dict)
                    and isinstance(obj.get("url"), str)
                    and isinstance(obj.get("id"), int)
                    and not isinstance(obj["id"], bool)):
                raise self.error(what, f"line {n} is not a record; "
                                 "nothing was imported")
            if obj["id"] not in wanted:
                return None
            got[obj["id"]] = obj
        return got

    # -- search -----------------------------------------------------------------
    def search(self, query: str | None, *, order_by: str = "last_update_dt",
               order_dir: str = "desc", offset: int = 0,
               limit: int | None = None, metadata: str | None = None
               ) -> tuple[int, list[dict], dict]:
        """``(total, records, collection statistics)`` of a search on the
        service, records ``offset`` to ``offset + limit`` in its order.
        Refused for a query or order key the service does not accept."""
        params = {"order_by": order_by, "order_dir": order_dir,
                  "return_metadata": "content" if metadata == "content"
                  else "reference"}
        if query and query.strip():
            params["search"] = query
        per_page = PER_PAGE if limit is None or limit > 0 else 1
        number = offset // per_page + 1
        skip = offset % per_page
        records: list[dict] = []
        total, stats = 0, {}
        while True:
            what = f"the search (page {number})"
            answer = self.exchange("GET", self._url(LIST), what,
                                   params=dict(params, page=number,
                                               per_page=per_page))
            if answer.status == 404 and number > 1:
                break  # past the last page
            if answer.status != 200:
                raise self.refusal(answer, "the query" if answer.status in
                                   (400, 422) else what)
            obj = self.decode(answer, what)
            problem = page_problem(obj)
            if problem:
                raise self.error(what, f"not a page of records ({problem})")
            total, stats = total_of(obj), obj.get("collection_stats") or {}
            page = obj["dataset_urls"]
            if len(page) < per_page and obj.get("next_pg"):
                raise self.error(what, f"the service sends fewer than "
                                 f"{per_page} records per page")
            records += page[skip:]
            skip = 0
            if limit == 0 or (limit is not None and len(records) >= limit) \
                    or not obj.get("next_pg") or not page:
                break
            number += 1
        if limit is not None:
            records = records[:limit]
        return total, [r for r in records if isinstance(r, dict)], stats

    # -- submission --------------------------------------------------------------
    def submit(self, url: str) -> tuple[int, dict | None, str]:
        """POST ``{"url": url}``: ``(HTTP status, the record answered,
        the server's message)``. 201 new, 202 known, 405 read-only, ..."""
        what = f"submitting {url}"
        answer = self.exchange("POST", self._url(LIST), what,
                               body={"url": url})
        if answer.status in (200, 201, 202):
            obj = self.decode(answer, what)
            return answer.status, obj if isinstance(obj, dict) else None, ""
        return answer.status, None, self._clean(server_message(answer.body))

    def link(self, path: str) -> str:
        return urljoin(self.base + "/", path.lstrip("/"))


@dataclass
class Digests:
    """What :meth:`Service.digests` read: the collection's ETag and
    ``{url: (id, digest)}``, or ``unchanged`` (a 304 to the ETag given)."""
    etag: str | None = None
    unchanged: bool = False
    entries: dict = field(default_factory=dict)


class _Retryable(Exception):
    """The connection broke while an answer was read."""


class _Unusable(Exception):
    """An answer is not JSON (its message says what it is)."""


def _parse(answer: Answer):
    """The JSON of an answer; _Unusable for an HTML page or invalid JSON."""
    ctype = answer.headers.get("Content-Type", "")
    try:
        return loads_strict(answer.body)
    except (ValueError, UnicodeDecodeError) as e:
        if "html" in ctype.lower() or answer.body.lstrip()[:1] == b"<":
            raise _Unusable(f"the answer (HTTP {answer.status}) is an HTML "
                            f"page, not JSON{_html_title(answer.body)}") \
                from None
        raise _Unusable(f"the answer (HTTP {answer.status}) is not valid "
                        f"JSON ({_short(str(e))})") from None
    except RecursionError:
        raise _Unusable("the answer is nested too deeply to be read") \
            from None


def server_message(body: bytes) -> str:
    """The server's own words: the ``description`` of DataLad-Registry's
    error envelope, FastAPI's ``detail``, pydantic's list of problems, or
    the start of the text."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        text = body.decode("utf-8", "replace").strip()
        title = _html_title(body)
        if title:
            return f"an HTML page{title}"
        return _short(" ".join(text.split()), 300)
    if isinstance(obj, dict):
        for key in ("description", "detail", "message", "error"):
            value = obj.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
            if isinstance(value, list):
                obj = value
                break
        else:
            return _short(json.dumps(obj), 300)
    if isinstance(obj, list):
        parts = []
        for item in obj[:5]:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(x) for x in item.get("loc") or ())
                parts.append(f"{loc}: {item['msg']}" if loc else
                             str(item["msg"]))
            else:
                parts.append(_short(json.dumps(item), 100))
        return "; ".join(parts)
    return _short(json.dumps(obj), 300)


def _html_title(body: bytes) -> str:
    m = re.search(rb"<title[^>]*>(.*?)</title>", body[:65536],
                  re.IGNORECASE | re.DOTALL)
    if not m:
        return ""
    title = " ".join(m[1].decode("utf-8", "replace").split())
    return f" ({_short(title, 100)})" if title else ""


def _short(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
