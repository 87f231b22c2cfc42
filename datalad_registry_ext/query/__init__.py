"""The registry search query language.

A pure-Python implementation (no DataLad import; the field catalogue comes
from :mod:`datalad_registry_ext.records`) of DataLad-Registry's
search language plus extensions; see ``docs/source/query-language.rst``.

Public API::

    from datalad_registry_ext.query import parse, compile_query, QueryError, SearchView
    tree = parse(text)              # query tree; raises QueryError
    pred = compile_query(tree)      # pred(record) -> bool
    view = SearchView(records)      # precomputed, for repeated searches
    view.search(text)               # indices of matching records, in order
    view.search_records(text)       # the records themselves

SearchView is the reference evaluator, in memory; searches of an index go
through the SQLite engine (:mod:`datalad_registry_ext.engine`), whose tests
compare its answers with SearchView's.
"""
from .evaluate import REGEX_TIMEOUT, Predicate, RegexTimeout, SearchView, compile_query
from .fields import DEFAULT_FIELDS, KNOWN_FIELDS, record_fields
from .parser import And, MatchAll, Not, Or, QueryError, Term, parse

__all__ = [
    "parse", "compile_query", "QueryError", "SearchView", "Predicate",
    "Term", "And", "Or", "Not", "MatchAll", "KNOWN_FIELDS", "DEFAULT_FIELDS",
    "record_fields", "REGEX_TIMEOUT", "RegexTimeout",
]
