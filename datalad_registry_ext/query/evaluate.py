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
import threading
import time
from collections import OrderedDict

from . import fields as F
from .parser import (
    And, MatchAll, Not, Or, QueryError, Term, compile_regex, parse,
)

__all__ = ["SearchView", "compile_query", "REGEX_TIMEOUT"]

#: Seconds the regular expressions of one search may take together before
#: the search is aborted with a QueryError.
REGEX_TIMEOUT = 2.0


class RegexTimeout(Exception):
    """A regular-expression term ran out of time (internal)."""

    def __init__(self, term):
        super().__init__(term)
        self.term = term


def bounded_search(rx, text: str, deadline):
    """``rx.search(text)`` (``rx`` from parser.compile_regex) within the time
    left until ``deadline`` (a time.monotonic() value; None: unbounded).
    Raises TimeoutError when that time has run out, before or during the
    match: the ``regex`` module checks its timeout while matching, in any
    thread. ``concurrent=True`` releases the GIL while matching, so other
    threads (a server's) go on meanwhile."""
    if deadline is None:
        return rx.search(text, concurrent=True)
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the regular expressions' time is up")
    return rx.search(text, concurrent=True, timeout=left)


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
        def test(obj, deadline=None):
            return any(v in _value_text(x) for x in _walk(obj, path))
    elif t.op == "eq":
        def test(obj, deadline=None):
            if branch_names and isinstance(obj, dict) and v in obj:
                return True
            return any(leaf == v for x in _walk(obj, path)
                       for leaf in _leaves(x))
    else:
        rx = compile_regex(t.value)

        def test(obj, deadline=None):
            # deadline: see bounded_search (given per call: a compiled
            # test serves many searches, each with its own deadline)
            if branch_names and isinstance(obj, dict) and any(
                    bounded_search(rx, k, deadline) for k in obj):
                return True
            return any(bounded_search(rx, leaf, deadline)
                       for x in _walk(obj, path) for leaf in _leaves(x))
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
    the time the regular expressions of one search take (seconds, counted
    by the ``regex`` module as processor time while matching).
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
        self._folded = {}  # id(texts) -> (idx, folded texts): see _fold
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

    def evaluate(self, tree, deadline=None) -> list:
        """Indices of the records matching a parsed query tree, ascending.
        Its regular expressions share ``regex_timeout`` seconds, or the time
        until ``deadline`` (time.monotonic()) if given; past it raises
        RegexTimeout (search() turns it into a QueryError)."""
        if isinstance(tree, MatchAll):
            return list(range(self.n))
        return sorted(self._eval(tree, None, self._deadline(deadline)))

    def matches(self, tree, deadline=None) -> set:
        """Like :meth:`evaluate`, as an unordered set."""
        if isinstance(tree, MatchAll):
            return set(range(self.n))
        return set(self._eval(tree, None, self._deadline(deadline)))

    def _deadline(self, deadline):
        # one budget per search, not per term: a query of many slow terms
        # takes regex_timeout at most, as in the engine
        if deadline is None:
            deadline = time.monotonic() + self.regex_timeout
        return deadline

    def clear_cache(self):
        with self._lock:
            self._cache.clear()

    # -- evaluation --------------------------------------------------------------

    def _everything(self):
        if self._universe is None:
            self._universe = frozenset(range(self.n))
        return self._universe

    def _eval(self, node, dom, deadline):
        """The indices (a subset of ``dom`` unless ``dom`` is None) of the
        records matching ``node``; ``deadline``: the search's, for its
        regular expressions."""
        if isinstance(node, Term):
            return self._term(node, dom, deadline)
        if isinstance(node, And):
            positive = [x for x in node.items if not isinstance(x, Not)]
            negative = [x for x in node.items if isinstance(x, Not)]
            positive.sort(key=_cost)
            negative.sort(key=_cost)
            result = dom
            for item in positive + negative:
                result = self._eval(item, result, deadline)
                if not result:
                    return set()
            return result
        if isinstance(node, Or):
            result = set()
            for item in node.items:
                result |= self._eval(item, dom, deadline)
            return result
        if isinstance(node, Not):
            base = self._everything() if dom is None else dom
            return base - self._eval(node.item, dom, deadline)
        if isinstance(node, MatchAll):
            return set(self._everything()) if dom is None else set(dom)
        raise TypeError(f"not a query tree node: {node!r}")

    def _term(self, t, dom, deadline):
        if self.cache_size > 0:
            with self._lock:
                hit = self._cache.get(t)
                if hit is not None:
                    self._cache.move_to_end(t)
            if hit is not None:
                return hit if dom is None else hit & dom
            if dom is None or len(dom) * 4 >= self.n:
                result = frozenset(self._leaf(t, None, deadline))
                with self._lock:
                    self._cache[t] = result
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
                return result if dom is None else result & dom
        return self._leaf(t, dom, deadline)

    # -- leaves --------------------------------------------------------------------

    def _leaf(self, t: Term, dom, deadline):
        f, op = t.field, t.op
        if f is None:
            return self._contains(self._fold(self._all), F.fold(t.value), dom)
        if f == "metadata":
            return self._metadata(t, dom, deadline)
        if f in ("tags", "branches") and (t.path or op in ("eq", "regex")):
            return self._json(t, [self._text[f]], dom, deadline,
                              branch_names=(f == "branches" and not t.path))
        col = self._text[f]
        if op == "contains":
            return self._contains(self._fold(col), F.fold(t.value), dom)
        if f in F.NUMBER_FIELDS and op != "regex":
            return self._compare(self._num[f], _CMP[op], t.operand, dom)
        if f in F.DATE_FIELDS and op != "regex":
            return self._compare(self._date[f], _date_test(op, t.operand),
                                 None, dom)
        listy = f in F.SUBDATASET_FIELDS
        if op == "eq":
            v = t.value.lower()
            if f == "subds_url":  # a URL also by its other spelling
                vs = F.subdataset_url_needles(t.value)
                return self._select(col, lambda s: any(
                    x in vs for x in s.split(F.SEP)), dom)
            if listy:
                return self._select(col, lambda s: v in s.split(F.SEP), dom)
            return {i for i, s in zip(*col)
                    if s == v and (dom is None or i in dom)}
        if op == "regex":
            rx = compile_regex(t.value)
            if listy:
                def test(s):
                    return any(bounded_search(rx, x, deadline)
                               for x in s.split(F.SEP))
            else:
                def test(s):
                    return bounded_search(rx, s, deadline)
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

    @staticmethod
    def _regex_select(t, col, test, dom):
        out = set()
        try:
            for i, s in zip(*col):
                if (dom is None or i in dom) and test(s):
                    out.add(i)
        except TimeoutError:  # from bounded_search
            raise RegexTimeout(t) from None
        return out

    def _metadata(self, t: Term, dom, deadline):
        meta = self._meta
        if t.extractors is None:
            cols = list(meta.items())
        else:
            cols = [(n, meta[n]) for n in dict.fromkeys(t.extractors)
                    if n in meta]
        if t.path or t.op in ("eq", "regex"):
            return self._json(t, [c for _, c in cols], dom, deadline)
        v = F.fold(t.value)
        result = set()
        for name, col in cols:
            if t.extractors is None and v in F.fold(name.lower()):
                result |= self._contains(col, "", dom)
            else:
                result |= self._contains(self._fold(col), v, dom)
        return result

    def _fold(self, col):
        """``col`` ([idx, texts]) with its texts folded (fields.fold), for
        substring terms; computed once per column (the state's lists live as
        long as the view)."""
        key = id(col[1])
        hit = self._folded.get(key)
        if hit is None:
            # texts are lowercased: an ASCII one is its own folding (and
            # shared, not copied)
            folded = [s if s.isascii() else F.fold(s) for s in col[1]]
            hit = self._folded[key] = (col[0], folded)
        return hit

    def _json(self, t: Term, cols, dom, deadline, branch_names=False):
        """Terms that look inside JSON: paths, and := / :~ on leaf values."""
        needles = json_needles(t)
        test = json_test(t, branch_names)
        loads = json.loads
        out = set()

        try:
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
                    if test(obj, deadline):
                        out.add(i)
        except TimeoutError:  # a regular expression's (bounded_search)
            raise RegexTimeout(t) from None
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
        return bool(view.matches(self.tree))

    def __repr__(self):
        return f"Predicate({self.tree!r})"


def compile_query(tree, *, regex_timeout=None) -> Predicate:
    """A predicate over single records for a parsed query tree (a query text
    is parsed first)."""
    if isinstance(tree, str):
        tree = parse(tree)
    return Predicate(tree, regex_timeout=regex_timeout)
