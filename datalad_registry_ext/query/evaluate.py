"""Query tree -> matching records.

:class:`SearchView` holds the column-wise search state of a list of records
(see :mod:`.fields`) and evaluates query trees on it with set operations:
every leaf (:class:`~.parser.Term`) becomes the set of indices of the
records it matches, computed by one list scan over the field's texts; AND,
OR and NOT are set intersection, union and difference. Within an AND, cheap
and selective operands go first and the later ones only look at the records
still in play, so ``metadata[bids_dataset]:"" AND NOT url:openneuro`` scans
the URLs of the BIDS datasets only.

:func:`compile_query` turns a tree into a predicate over single records.
"""
from __future__ import annotations

import json
import operator
import re
import signal
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager

from . import fields as F
from .parser import And, MatchAll, Not, Or, QueryError, Term, parse

__all__ = ["SearchView", "compile_query", "REGEX_TIMEOUT"]

#: Seconds a regular-expression term may take before the search is aborted
#: with a QueryError.
REGEX_TIMEOUT = 2.0


class RegexTimeout(Exception):
    """A regular-expression term ran out of time (internal)."""

    def __init__(self, term):
        super().__init__(term)
        self.term = term


class Alarm(BaseException):
    """Raised by :func:`time_budget` when the time is up (a BaseException,
    so that no ``except Exception`` on the way swallows it)."""


@contextmanager
def time_budget(seconds, on_expiry=None):
    """Interrupt the body after ``seconds``, raising :class:`Alarm` (after
    calling ``on_expiry()``, if given).

    Python's ``re`` engine checks for signals while matching, so a SIGALRM
    timer can stop a runaway match. That is only possible in the main thread
    of a POSIX process and when no other interval timer is running; otherwise
    the body runs unbounded (the pattern checks in the parser still refuse
    the usual exponential constructs) and callers check a deadline between
    matches.
    """
    usable = (seconds and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if usable:
        try:
            usable = signal.getitimer(signal.ITIMER_REAL)[0] == 0
        except Exception:  # pragma: no cover
            usable = False
    if not usable:
        yield
        return

    def handler(signum, frame):
        if on_expiry is not None:
            on_expiry()
        raise Alarm()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM,
                          old if old is not None else signal.SIG_DFL)


def _esc(text: str) -> str:
    """``text`` as it appears inside a JSON string literal."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _walk(obj, path):
    """Values at ``path`` under ``obj``; lists anywhere are flattened. No
    recursion on the document's depth."""
    stack = [(obj, 0)]
    n = len(path)
    while stack:
        obj, i = stack.pop()
        while True:
            if isinstance(obj, list):
                stack.extend((x, i) for x in reversed(obj))
                break
            if i == n:
                yield obj
                break
            if not isinstance(obj, dict):
                break
            try:
                obj = obj[path[i]]
            except KeyError:
                break
            i += 1


def _leaves(obj):
    """Texts of the scalars in ``obj``, in document order, without
    recursion."""
    stack = [obj]
    leaf_text = F.leaf_text
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            stack.extend(reversed(list(obj.values())))
        elif isinstance(obj, list):
            stack.extend(reversed(obj))
        else:
            yield leaf_text(obj)


def _value_text(obj):
    if isinstance(obj, str):
        return obj
    return json.dumps(obj, ensure_ascii=False)


def json_needles(t: Term) -> list[str]:
    """Texts the (lowercased) JSON text of a document must contain for the
    JSON term ``t`` to match it: a cheap test before parsing."""
    needles = ['"' + _esc(seg.lower()) + '"' for seg in t.path]
    v = t.value.lower()
    if t.op in ("contains", "eq") and v:
        needles.append(_esc(v))
    return needles


def json_test(t: Term, branch_names: bool = False):
    """The test of a term that looks inside JSON (a path, or := / :~ on
    leaf values) on one parsed document. ``branch_names``: the document is
    a ``branches`` object, whose keys (branch names) count as values."""
    path = tuple(seg.lower() for seg in t.path)
    v = t.value.lower()
    if t.op == "contains":
        def test(obj):
            return any(v in _value_text(x) for x in _walk(obj, path))
    elif t.op == "eq":
        def test(obj):
            if branch_names and isinstance(obj, dict) and v in obj:
                return True
            return any(leaf == v for x in _walk(obj, path)
                       for leaf in _leaves(x))
    else:
        rx = re.compile(t.value, re.IGNORECASE)

        def test(obj):
            if branch_names and isinstance(obj, dict) and any(
                    rx.search(k) for k in obj):
                return True
            return any(rx.search(leaf) for x in _walk(obj, path)
                       for leaf in _leaves(x))
    return test


_CMP = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt,
        "le": operator.le, "eq": operator.eq}


def _date_test(op, interval):
    start, end = interval
    if op == "gt":
        return lambda x: x >= end
    if op == "ge":
        return lambda x: x >= start
    if op == "lt":
        return lambda x: x < start
    if op == "le":
        return lambda x: x < end
    return lambda x: start <= x < end


# cost ranks used to order the operands of AND
_CHEAP, _MEDIUM, _DEAR, _DEAREST = 1, 10, 100, 1000


def _cost(node) -> int:
    if isinstance(node, Term):
        f = node.field
        if f is None:
            return _DEAR
        if node.op == "regex" or node.path:
            return _DEAREST
        if f == "metadata":
            if node.op == "eq":
                return _DEAREST
            if node.extractors is not None and node.value == "":
                return _CHEAP
            return _DEAR
        if f in ("tags", "branches"):
            return _DEAREST if node.op == "eq" else _MEDIUM
        return _CHEAP
    if isinstance(node, Not):
        return _cost(node.item) + 1
    if isinstance(node, (And, Or)):
        return sum(_cost(x) for x in node.items)
    return 0


class SearchView:
    """Records prepared for fast repeated searching.

    ``SearchView(records)`` lowercases and renders each record's searchable
    fields once (see :mod:`datalad_registry_ext.query.fields`) and keeps them
    column-wise. ``view.search(text)`` then parses the query and returns the
    indices of the matching records, in input order.

    This is the reference semantics of the query language, in memory: the
    search engine of an index (:mod:`datalad_registry_ext.engine`) is tested
    against it.

    ``cache_size`` bounds the number of leaf results (index sets of single
    terms) kept between searches (0: no caching). ``regex_timeout`` bounds
    the time of one regular-expression term (seconds).
    """

    def __init__(self, records, *, cache_size: int = 64,
                 regex_timeout: float | None = None, _state=None):
        self._records = records if records is None else list(records)
        state = _state if _state is not None else F.build_state(self._records)
        F.check_state(state)
        self._state = state
        self.n = state["n"]
        self._all = state["all"]
        self._text = state["text"]
        self._meta = state["meta"]
        self._num = state["num"]
        self._date = state["date"]
        self.cache_size = cache_size
        self.regex_timeout = (REGEX_TIMEOUT if regex_timeout is None
                              else regex_timeout)
        self._cache = OrderedDict()
        self._lock = threading.Lock()
        self._universe = None
        if self._records is not None and len(self._records) != self.n:
            raise ValueError(f"{len(self._records)} records given for a state "
                             f"of {self.n}")

    # -- construction -------------------------------------------------------

    @property
    def records(self):
        """The records (None for a view made from a state alone)."""
        return self._records

    def __len__(self):
        return self.n

    # -- searching --------------------------------------------------------------

    def search(self, text: str) -> list:
        """Indices of the records matching the query ``text``, ascending.
        Raises QueryError."""
        tree = parse(text)
        try:
            return self.evaluate(tree)
        except RegexTimeout as e:
            raise QueryError(
                "regular expression took too long", text,
                e.term.value_position,
                f"expected a pattern that runs within {self.regex_timeout:g} s"
                " (avoid nested or ambiguous repetitions)") from None

    def search_records(self, text: str) -> list:
        """The matching records themselves, in input order."""
        if self._records is None:
            raise ValueError("this view was made from a state without records")
        recs = self._records
        return [recs[i] for i in self.search(text)]

    def count(self, text: str) -> int:
        return len(self.search(text))

    def evaluate(self, tree) -> list:
        """Indices of the records matching a parsed query tree, ascending.
        May raise RegexTimeout (search() turns it into a QueryError)."""
        if isinstance(tree, MatchAll):
            return list(range(self.n))
        return sorted(self._eval(tree, None))

    def matches(self, tree) -> set:
        """Like :meth:`evaluate`, as an unordered set."""
        if isinstance(tree, MatchAll):
            return set(range(self.n))
        return set(self._eval(tree, None))

    def clear_cache(self):
        with self._lock:
            self._cache.clear()

    # -- evaluation --------------------------------------------------------------

    def _everything(self):
        if self._universe is None:
            self._universe = frozenset(range(self.n))
        return self._universe

    def _eval(self, node, dom):
        """The indices (a subset of ``dom`` unless ``dom`` is None) of the
        records matching ``node``."""
        if isinstance(node, Term):
            return self._term(node, dom)
        if isinstance(node, And):
            positive = [x for x in node.items if not isinstance(x, Not)]
            negative = [x for x in node.items if isinstance(x, Not)]
            positive.sort(key=_cost)
            negative.sort(key=_cost)
            result = dom
            for item in positive + negative:
                result = self._eval(item, result)
                if not result:
                    return set()
            return result
        if isinstance(node, Or):
            result = set()
            for item in node.items:
                result |= self._eval(item, dom)
            return result
        if isinstance(node, Not):
            base = self._everything() if dom is None else dom
            return base - self._eval(node.item, dom)
        if isinstance(node, MatchAll):
            return set(self._everything()) if dom is None else set(dom)
        raise TypeError(f"not a query tree node: {node!r}")

    def _term(self, t, dom):
        if self.cache_size > 0:
            with self._lock:
                hit = self._cache.get(t)
                if hit is not None:
                    self._cache.move_to_end(t)
            if hit is not None:
                return hit if dom is None else hit & dom
            if dom is None or len(dom) * 4 >= self.n:
                result = frozenset(self._leaf(t, None))
                with self._lock:
                    self._cache[t] = result
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
                return result if dom is None else result & dom
        return self._leaf(t, dom)

    # -- leaves --------------------------------------------------------------------

    def _leaf(self, t: Term, dom):
        f, op = t.field, t.op
        if f is None:
            return self._contains(self._all, t.value.lower(), dom)
        if f == "metadata":
            return self._metadata(t, dom)
        if f in ("tags", "branches") and (t.path or op in ("eq", "regex")):
            return self._json(t, [self._text[f]], dom, branch_names=(
                f == "branches" and not t.path))
        col = self._text[f]
        if op == "contains":
            return self._contains(col, t.value.lower(), dom)
        if f in F.NUMBER_FIELDS and op != "regex":
            return self._compare(self._num[f], _CMP[op], t.operand, dom)
        if f in F.DATE_FIELDS and op != "regex":
            return self._compare(self._date[f], _date_test(op, t.operand),
                                 None, dom)
        listy = f in F.SUBDATASET_FIELDS
        if op == "eq":
            v = t.value.lower()
            if listy:
                return self._select(col, lambda s: v in s.split(F.SEP), dom)
            return {i for i, s in zip(*col)
                    if s == v and (dom is None or i in dom)}
        if op == "regex":
            rx = re.compile(t.value, re.IGNORECASE)
            if listy:
                def test(s):
                    return any(rx.search(x) for x in s.split(F.SEP))
            else:
                test = rx.search
            return self._regex_select(t, col, test, dom)
        raise AssertionError(f"unhandled term {t!r}")  # pragma: no cover

    @staticmethod
    def _contains(col, v, dom):
        idx, txt = col
        if dom is None:
            if not v:
                return set(idx)
            return {i for i, s in zip(idx, txt) if v in s}
        if not v:
            return {i for i in idx if i in dom}
        return {i for i, s in zip(idx, txt) if i in dom and v in s}

    @staticmethod
    def _select(col, test, dom):
        if dom is None:
            return {i for i, s in zip(*col) if test(s)}
        return {i for i, s in zip(*col) if i in dom and test(s)}

    @staticmethod
    def _compare(col, cmp, operand, dom):
        idx, vals = col
        if operand is None:  # cmp is a one-argument test
            if dom is None:
                return {i for i, x in zip(idx, vals) if cmp(x)}
            return {i for i, x in zip(idx, vals) if i in dom and cmp(x)}
        if dom is None:
            return {i for i, x in zip(idx, vals) if cmp(x, operand)}
        return {i for i, x in zip(idx, vals) if i in dom and cmp(x, operand)}

    def _regex_select(self, t, col, test, dom):
        deadline = time.monotonic() + self.regex_timeout
        out = set()
        try:
            with time_budget(self.regex_timeout):
                for k, (i, s) in enumerate(zip(*col)):
                    if dom is not None and i not in dom:
                        continue
                    if test(s):
                        out.add(i)
                    if not k & 255 and time.monotonic() > deadline:
                        raise RegexTimeout(t)
        except Alarm:
            raise RegexTimeout(t) from None
        return out

    def _metadata(self, t: Term, dom):
        meta = self._meta
        if t.extractors is None:
            cols = list(meta.items())
        else:
            cols = [(n, meta[n]) for n in dict.fromkeys(t.extractors)
                    if n in meta]
        if t.path or t.op in ("eq", "regex"):
            return self._json(t, [c for _, c in cols], dom)
        v = t.value.lower()
        result = set()
        for name, col in cols:
            if t.extractors is None and v in name.lower():
                result |= self._contains(col, "", dom)
            else:
                result |= self._contains(col, v, dom)
        return result

    def _json(self, t: Term, cols, dom, branch_names=False):
        """Terms that look inside JSON: paths, and := / :~ on leaf values."""
        needles = json_needles(t)
        op = t.op
        test = json_test(t, branch_names)
        loads = json.loads
        out = set()

        def scan():
            deadline = time.monotonic() + self.regex_timeout
            k = 0
            for idx, txt in cols:
                for i, s in zip(idx, txt):
                    if (dom is not None and i not in dom) or i in out:
                        continue
                    if needles and not all(n in s for n in needles):
                        continue
                    try:
                        obj = loads(s)
                    except ValueError:
                        continue
                    if test(obj):
                        out.add(i)
                    k += 1
                    if op == "regex" and not k & 255 and \
                            time.monotonic() > deadline:
                        raise RegexTimeout(t)

        if op == "regex":
            try:
                with time_budget(self.regex_timeout):
                    scan()
            except Alarm:
                raise RegexTimeout(t) from None
        else:
            scan()
        return out


class Predicate:
    """A compiled query: ``pred(item) -> bool``.

    ``item`` is a record (a dict in API v2 shape) or its precomputed search
    data, :func:`datalad_registry_ext.query.fields.record_fields(record)`
    (cheaper when a record is tested against several queries).
    """

    def __init__(self, tree, regex_timeout=None):
        self.tree = tree
        self.regex_timeout = regex_timeout

    def __call__(self, item) -> bool:
        if isinstance(item, dict) and item.get("format") == F.STATE_FORMAT:
            state = item
        else:
            state = F.build_state([item])
        if isinstance(self.tree, MatchAll):
            return True
        view = SearchView(None, cache_size=0, regex_timeout=self.regex_timeout,
                          _state=state)
        return bool(view._eval(self.tree, None))

    def __repr__(self):
        return f"Predicate({self.tree!r})"


def compile_query(tree, *, regex_timeout=None) -> Predicate:
    """A predicate over single records for a parsed query tree (a query text
    is parsed first)."""
    if isinstance(tree, str):
        tree = parse(tree)
    return Predicate(tree, regex_timeout=regex_timeout)
