"""Query text -> query tree.

The tree is made of the frozen dataclasses below (hashable, comparable;
positions are carried along but do not take part in equality):

- :class:`Term` -- one search condition;
- :class:`And`, :class:`Or` -- tuples of sub-trees;
- :class:`Not` -- one sub-tree;
- :class:`MatchAll` -- the empty query.

The grammar is in ``grammar.lark`` (LALR(1), contextual lexer). Everything
that goes wrong is reported as :class:`QueryError`, with the query, a caret
under the failing position and what was expected.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass, field as dc_field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path

import regex

from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.locations import user_cache_dir

from . import fields as F

__all__ = ["QueryError", "Term", "And", "Or", "Not", "MatchAll", "parse",
           "OPERATORS", "EXTRACTOR_ALIASES", "canonical_extractor"]


# -- errors ----------------------------------------------------------------------

class QueryError(RegistryExtError, ValueError):
    """An invalid query.

    ``str(err)`` shows the reason, the query with a caret under the failing
    position and what was expected. Attributes: ``query``, ``position``
    (0-based index into ``query``), ``reason``, ``expected``.
    """

    def __init__(self, reason: str, query: str = "", position: int = 0,
                 expected: str = ""):
        self.reason = reason
        self.query = query
        self.position = position
        self.expected = expected
        super().__init__(self._format())

    def _format(self) -> str:
        shown = "".join(" " if c in "\t\n\r\v\f" else c for c in self.query)
        lines = [f"Invalid query: {self.reason}", f"  {shown}",
                 "  " + " " * self.position + "^"]
        if self.expected:
            lines.append(self.expected)
        return "\n".join(lines)


class _Fail(Exception):
    """Raised while building the tree; turned into QueryError by parse()."""

    def __init__(self, reason, position, expected=""):
        super().__init__(reason)
        self.reason = reason
        self.position = position
        self.expected = expected


# -- the tree ----------------------------------------------------------------------

#: operator as written after "field:" -> name in the tree
OPERATORS = {None: "contains", "?": "contains", "=": "eq", "~": "regex",
             ">": "gt", ">=": "ge", "<": "lt", "<=": "le"}
COMPARISONS = ("gt", "ge", "lt", "le")


@dataclass(frozen=True)
class Term:
    """One search condition.

    ``field`` is None for a bare word/string (searching the default fields);
    ``op`` one of contains, eq, regex, gt, ge, lt, le; ``value`` the value as
    written (quotes stripped, ``\\"`` unescaped); ``extractors`` the names in
    ``metadata[...]`` (None when not given); ``path`` the keys after the
    field; ``operand`` the parsed value of a comparison or of ``:=`` on a
    numeric field (a number) or a date field (a ``(start, end)`` interval of
    POSIX timestamps, end exclusive).
    """
    value: str
    field: str | None = None
    op: str = "contains"
    extractors: tuple | None = None
    path: tuple = ()
    operand: object = None
    position: int = dc_field(default=0, compare=False)
    value_position: int = dc_field(default=0, compare=False)


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


@dataclass(frozen=True)
class MatchAll:
    pass


# -- extractor names -------------------------------------------------------------------

#: Short extractor names (as the results table used to show them) -> the
#: full names extractors are stored under. Accepted wherever a full name is:
#: ``registry-extract -e``, ``datalad.registry.extractors`` and the query
#: language's ``metadata[...]`` (unquoted).
EXTRACTOR_ALIASES = {
    "core": "metalad_core",
    "smm": "metalad_studyminimeta",
    "studyminimeta": "metalad_studyminimeta",
    "bids": "bids_dataset",
    "gin": "datacite_gin",
    "datacite": "datacite_gin",
    "rfc822": "datalad_rfc822",
    "frictionless": "frictionless_datapackage",
}


def canonical_extractor(name: str) -> str:
    """The full name of an extractor name or alias (other names as given)."""
    return EXTRACTOR_ALIASES.get(name, name)


# -- values ----------------------------------------------------------------------------

def unquote(s: str) -> str:
    """Strip the quotes of a STRING token and unescape ``\\"`` only."""
    return s[1:-1].replace('\\"', '"')


#: Numbers in comparisons stay within 10**±MAX_EXPONENT (record values are
#: 64-bit integers, below 10**19).
MAX_EXPONENT = 30
#: The longest query accepted, in characters.
MAX_QUERY_LENGTH = 4096

_NUMBER = re.compile(
    r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*\Z")
_UNITS = {"b": 1}
for _i, _p in enumerate("kmgtpe", start=1):
    _UNITS[_p + "b"] = 1000 ** _i
    _UNITS[_p + "ib"] = 1024 ** _i


def parse_number(text: str, fld: str):
    """A number for a comparison on ``fld``; sizes may carry a unit.

    Units (case-insensitive): B, kB MB GB TB PB EB (powers of 1000), KiB MiB
    GiB TiB PiB EiB (powers of 1024). A number without unit is in the field's
    own unit (bytes; KiB for git_objects_kb). Raises ValueError.
    """
    m = _NUMBER.match(text)
    if not m:
        raise ValueError
    number, unit = m.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:  # pragma: no cover - regex guarantees syntax
        raise ValueError
    # bound the magnitude before anything turns 1e9999999 into an integer
    # of ten million digits
    if value and not -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT:
        raise ValueError
    if unit:
        if fld not in F.SIZE_FIELDS or unit.lower() not in _UNITS:
            raise ValueError
        value = value * _UNITS[unit.lower()] / F.SIZE_FIELDS[fld]
    if value == value.to_integral_value():
        return int(value)
    return float(value)


_DATE = re.compile(
    r"\s*(\d{4})(?:-(\d{2})(?:-(\d{2})(?:[Tt ](\d{2})(?::(\d{2})"
    r"(?::(\d{2})(?:[.,](\d{1,6})\d*)?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?)?)?)?\s*\Z")


def parse_date(text: str):
    """The interval ``(start, end)`` (POSIX timestamps, end exclusive) an
    ISO 8601 date or date-time denotes: ``2024`` is that year, ``2024-05``
    that month, ``2024-05-30T13:00`` that minute. Naive times are UTC.
    Raises ValueError."""
    m = _DATE.match(text)
    if not m:
        raise ValueError
    year, month, day, hour, minute, second, frac, tz = m.groups()
    if tz is None or tz in "Zz":
        tzinfo = timezone.utc
    else:
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        hh, mm = int(digits[:2]), int(digits[2:] or 0)
        if hh > 23 or mm > 59:
            raise ValueError
        tzinfo = timezone(sign * timedelta(hours=hh, minutes=mm))
    start = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                     int(minute or 0), int(second or 0),
                     int((frac or "0").ljust(6, "0")), tzinfo=tzinfo)
    if month is None:
        end = start.replace(year=start.year + 1)
    elif day is None:
        end = (start.replace(year=start.year + 1, month=1) if start.month == 12
               else start.replace(month=start.month + 1))
    elif hour is None:
        end = start + timedelta(days=1)
    elif minute is None:
        end = start + timedelta(hours=1)
    elif second is None:
        end = start + timedelta(minutes=1)
    elif frac is None:
        end = start + timedelta(seconds=1)
    else:
        end = start + timedelta(microseconds=1)
    return (start.timestamp(), end.timestamp())


# -- regular expressions ------------------------------------------------------------

try:  # Python >= 3.11
    from re import _parser as _sre
    from re import _constants as _src
except ImportError:  # pragma: no cover
    import sre_parse as _sre
    import sre_constants as _src

_REPEATS = {_src.MAX_REPEAT, _src.MIN_REPEAT}
_POSSESSIVE = getattr(_src, "POSSESSIVE_REPEAT", None)
_ATOMIC = getattr(_src, "ATOMIC_GROUP", None)


class UnsafeRegex(ValueError):
    pass


def _first_chars(items):
    """Lowercased characters a sub-pattern can start with; None if unknown
    (may be anything or empty)."""
    for op, av in items:
        if op is _src.LITERAL:
            return {chr(av).lower()}
        if op is _src.IN:
            chars = set()
            for iop, iav in av:
                if iop is _src.LITERAL:
                    chars.add(chr(iav).lower())
                elif iop is _src.RANGE and iav[1] - iav[0] < 256:
                    chars.update(chr(c).lower() for c in range(iav[0], iav[1] + 1))
                else:
                    return None
            return chars
        if op is _src.SUBPATTERN:
            return _first_chars(av[-1])
        if op in (_src.AT,):  # anchors take no characters
            continue
        return None
    return None


def _negated_complements(items) -> bool:
    """Whether a set ``[^...]`` holds a class and its complement."""
    if not any(op is _src.NEGATE for op, _ in items):
        return False
    names = {str(av) for op, av in items if op is _src.CATEGORY}
    return any(n.replace("NOT_", "", 1) in names
               for n in names if "NOT_" in n)


def check_regex(pattern: str):
    """Compile ``pattern`` (case-insensitive) after refusing constructs that
    can make Python's backtracking matcher take exponential time:
    backreferences, a repetition inside a repetition (``(a+)+``), and
    alternatives that may start alike inside a repetition (``(a|ab)*``).
    Raises ``re.error`` or :class:`UnsafeRegex`."""
    tree = _sre.parse(pattern, re.IGNORECASE)

    def scan(items, in_repeat):
        for op, av in items:
            if op in (_src.GROUPREF, _src.GROUPREF_EXISTS):
                raise UnsafeRegex("backreferences are not supported")
            if op in _REPEATS:
                lo, hi, body = av
                if in_repeat and lo != hi:
                    raise UnsafeRegex(
                        "a repetition inside a repetition, such as (a+)+, "
                        "is not supported (it can take exponential time)")
                scan(body, in_repeat or hi > 1)
            elif op is _POSSESSIVE or op is _ATOMIC:
                scan(av[-1] if op is _POSSESSIVE else av, False)
            elif op is _src.SUBPATTERN:
                scan(av[-1], in_repeat)
            elif op is _src.BRANCH:
                branches = av[1]
                if in_repeat:
                    seen = set()
                    for b in branches:
                        first = _first_chars(b)
                        if first is None or first & seen:
                            raise UnsafeRegex(
                                "alternatives that can match alike inside a "
                                "repetition, such as (a|ab)*, are not "
                                "supported (they can take exponential time)")
                        seen |= first
                for b in branches:
                    scan(b, in_repeat)
            elif op in (_src.ASSERT, _src.ASSERT_NOT):
                scan(av[1], in_repeat)
            elif op is _src.IN and _negated_complements(av):
                # re matches nothing there; regex releases disagree (2026.5
                # fails to compile it, 2026.11 matches every character)
                raise re.error("a negated set holding a class and its "
                               "complement, such as [^\\W\\w], matches "
                               "nothing; leave it out")

    scan(tree, False)
    return compile_regex(pattern)


def compile_regex(pattern: str):
    """A pattern of the query language, compiled for matching: Python ``re``
    syntax (check_regex parses it with ``re``'s parser), matched by the
    ``regex`` module, whose ``timeout=`` bounds a match in any thread (``re``
    can only be interrupted by a signal, in the main thread). ``regex.V0``
    is its ``re``-compatible dialect, with one exception handled here:
    inside a set ``regex`` reads ``[:alpha:]`` as a POSIX class, where
    ``re`` reads the characters ``[ : a l p h``; ``[\\:`` means the same
    to both, everywhere a ``[:`` can stand (outside a set it opens a set
    starting with ":", after a backslash it is a literal "[" then ":").
    Raises ``re.error`` if ``regex`` cannot compile it."""
    try:
        return regex.compile(pattern.replace("[:", "[\\:"),
                             regex.IGNORECASE | regex.V0)
    except RecursionError:
        raise
    except Exception as e:
        # regex.error, or a bug of the module on a pattern re accepts
        # (``[^\W\w]`` raises AttributeError in regex 2026.5)
        raise re.error(f"cannot compile this pattern ({e})") from e


# -- the parser ---------------------------------------------------------------------------

_GRAMMAR = Path(__file__).with_name("grammar.lark")
_lark = None
_lark_lock = threading.Lock()

def _field_term(ref, op_tok, value_tok):
    name_tok, extractors, path = ref
    name = str(name_tok)
    if name not in F.KNOWN_FIELDS:
        raise _Fail(f"unknown field {name!r}", name_tok.start_pos,
                    "expected one of the known fields: "
                    + ", ".join(F.KNOWN_FIELDS))
    if extractors is not None and name != "metadata":
        raise _Fail(f"field {name!r} takes no [extractors]",
                    name_tok.end_pos,
                    "expected ':' (only metadata[...] selects extractors)")
    if path and name not in F.JSON_FIELDS:
        raise _Fail(f"field {name!r} has no keys to follow",
                    name_tok.end_pos,
                    "expected ':' (paths apply to "
                    + ", ".join(F.JSON_FIELDS) + ")")
    op_text = str(op_tok) if op_tok is not None else None
    op = OPERATORS[op_text]
    raw = str(value_tok)
    value = unquote(raw) if value_tok.type == "STRING" else raw
    vpos = value_tok.start_pos
    operand = None
    if op in COMPARISONS and name not in F.COMPARABLE_FIELDS:
        raise _Fail(f"operator '{op_text}' does not apply to field {name!r}",
                    op_tok.start_pos,
                    "expected ':', ':=' or ':~' here; comparisons apply to "
                    + ", ".join(F.COMPARABLE_FIELDS))
    if op in COMPARISONS or (op == "eq" and name in F.COMPARABLE_FIELDS):
        if name in F.DATE_FIELDS:
            try:
                operand = parse_date(value)
            except (ValueError, OverflowError):
                raise _Fail(f"invalid date {value!r} for {name}", vpos,
                            "expected an ISO 8601 date, e.g. 2024, 2024-05, "
                            "2024-05-30 or 2024-05-30T13:00:00+02:00")
        else:
            try:
                operand = parse_number(value, name)
            except (ValueError, OverflowError):
                if name in F.SIZE_FIELDS:
                    what = ("a size, e.g. 5000, 1.5kB, 10GB or 500MiB "
                            f"(plain numbers are in "
                            f"{'KiB' if F.SIZE_FIELDS[name] == 1024 else 'bytes'})")
                else:
                    what = "a number, e.g. 1000"
                raise _Fail(f"invalid number {value!r} for {name}", vpos,
                            f"expected {what}, between -1e{MAX_EXPONENT} and "
                            f"1e{MAX_EXPONENT}")
    elif op == "regex":
        try:
            check_regex(value)
        except UnsafeRegex as e:
            raise _Fail(f"unsafe regular expression: {e}", vpos,
                        "expected a simpler pattern, e.g. (ab)+ instead of "
                        "(a+b?)+")
        except (re.error, OverflowError, RecursionError) as e:
            pos = vpos + (1 if value_tok.type == "STRING" else 0)
            epos = getattr(e, "pos", None)
            if isinstance(epos, int) and '\\"' not in raw:
                pos += epos  # else unescaping shifted the offsets
            raise _Fail(f"invalid regular expression: {e}", pos,
                        "expected a Python regular expression")
    return Term(value=value, field=name, op=op, extractors=extractors,
                path=path, operand=operand, position=name_tok.start_pos,
                value_position=vpos)


# the query being parsed, for the transformer (which lark shares between
# threads)
_current = threading.local()


def _unit_word(item):
    """The unit a bare (unquoted) word that is exactly a size unit names."""
    text = getattr(_current, "text", None)
    if (isinstance(item, Term) and item.field is None and text is not None
            and item.value.lower() in _UNITS
            and text.startswith(item.value, item.position)):
        return item.value
    return None


def _unitless_size_term(item):
    """Is ``item`` (or the term a NOT holds) a comparison or ``:=`` on a size
    field with an unquoted, unitless number? Returns the term or None."""
    text = getattr(_current, "text", None)
    t = item.item if isinstance(item, Not) else item
    if (not isinstance(t, Term) or text is None or t.field not in F.SIZE_FIELDS
            or t.op not in COMPARISONS + ("eq",)
            or not text.startswith(t.value, t.value_position)):
        return None
    m = _NUMBER.match(t.value)
    if not m or m.group(2) or t.value != t.value.strip():
        return None
    return t


def _merge_units(items):
    """``size:>1 GB`` -> ``size:>"1 GB"``: a comparison (or ``:=``) on a size
    field with a unitless number, followed in the same AND by a bare word
    that is exactly a size unit, with only whitespace between (no ``AND``,
    no parenthesis) is one comparison with that unit."""
    text = getattr(_current, "text", None)
    if text is None:
        return items
    out = list(items)
    i = 0
    while i < len(out) - 1:
        t = _unitless_size_term(out[i])
        unit = _unit_word(out[i + 1]) if t is not None else None
        end = t.value_position + len(t.value) if t is not None else 0
        if unit is not None and end < out[i + 1].position \
                and not text[end:out[i + 1].position].strip():
            value = f"{t.value} {unit}"
            try:
                operand = parse_number(value, t.field)
            except (ValueError, OverflowError):
                operand = None
            if operand is not None:
                merged = Term(value=value, field=t.field, op=t.op,
                              extractors=t.extractors, path=t.path,
                              operand=operand, position=t.position,
                              value_position=t.value_position)
                out[i:i + 2] = [Not(merged) if isinstance(out[i], Not)
                                else merged]
                continue
        i += 1
    return tuple(out)


def _flatten(cls, items):
    out = []
    for it in items:
        if isinstance(it, cls):
            out.extend(it.items)
        else:
            out.append(it)
    return cls(tuple(out))


def _make_transformer():
    # lark is imported when the first query is parsed, not when a command
    # module is loaded: most registry-* calls never parse a query
    from lark import Transformer, v_args

    @v_args(inline=True)
    class Build(Transformer):
        def or_expr(self, *items):
            return _flatten(Or, items)

        def and_expr(self, *items):
            items = _merge_units(items)
            if len(items) == 1:
                return items[0]
            return _flatten(And, items)

        def not_expr(self, item):
            return Not(item)

        def word(self, tok):
            return Term(value=str(tok), position=tok.start_pos,
                        value_position=tok.start_pos)

        def phrase(self, tok):
            return Term(value=unquote(str(tok)), position=tok.start_pos,
                        value_position=tok.start_pos)

        def field_term(self, ref, op, value):
            return _field_term(ref, op, value)

        def field_ref(self, name, extractors, path):
            return (name, extractors, path)

        def extractors(self, *toks):
            # unquoted short names are aliases of the full names; a quoted
            # name is taken literally; unknown names stay (synced records
            # may carry extractors that are not installed here)
            names = (unquote(str(t)) if t.type == "STRING"
                     else canonical_extractor(str(t)) for t in toks)
            return tuple(dict.fromkeys(names))

        def path(self, *toks):
            return tuple(unquote(str(t)) if t.type == "STRING" else str(t)
                         for t in toks)

    return Build()


def _grammar_cache(grammar: str) -> str | bool:
    """Where lark keeps its analysis of the grammar between processes (a
    command-line search would otherwise spend ~40 ms rebuilding it); False
    when the user cache directory cannot be written."""
    directory = user_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    if not os.access(directory, os.W_OK):
        return False
    digest = hashlib.sha256(grammar.encode("utf-8")).hexdigest()[:16]
    return str(directory / f"query-grammar-{digest}.lark-cache")


def _parser():
    global _lark
    if _lark is None:
        with _lark_lock:
            if _lark is None:
                from lark import Lark  # see _make_transformer
                grammar = _GRAMMAR.read_text(encoding="utf-8")
                _lark = Lark(grammar, parser="lalr", lexer="contextual",
                             transformer=_make_transformer(),
                             maybe_placeholders=True,
                             cache=_grammar_cache(grammar))
    return _lark


# -- error reporting -------------------------------------------------------------------------

_KEYWORD_AT_END = re.compile(r"(?:^|[\s()])(AND|OR|NOT)$")
_TERM = "a search term (a word, a \"quoted string\", field:value, NOT or '(')"
_DESCRIBE = {
    "WORD": _TERM, "STRING": _TERM, "FIELD_NAME": _TERM, "LPAR": _TERM,
    "_NOT": _TERM,
    "RPAR": "')'", "COLON": "':'", "LSQB": "'['", "RSQB": "']'",
    "COMMA": "','", "DOT": "'.'", "_AND": "AND", "_OR": "OR",
    "VALUE": "a value", "OPERATOR": "a value", "EXTRACTOR_NAME":
    "an extractor name", "SEGMENT": "a key name", "$END": "the end of the query",
}


def _describe_expected(expected) -> str:
    seen = []
    for name in sorted(expected):
        d = _DESCRIBE.get(name, name)
        if d not in seen:
            seen.append(d)
    if not seen:
        return ""
    if len(seen) == 1:
        return "expected " + seen[0]
    return "expected one of: " + "; ".join(seen)


def _prescan(text: str) -> None:
    """Find unterminated quotes, unbalanced parentheses and NUL characters
    (before the grammar does, to report them plainly)."""
    opened = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise _Fail("unterminated quoted string", i,
                            "expected a closing '\"'")
            if F.SEP in text[i:j]:
                raise _Fail("NUL characters are not allowed",
                            text.index(F.SEP, i), "")
            i = j + 1
            continue
        if c == "(":
            opened.append(i)
        elif c == ")":
            if not opened:
                raise _Fail("unbalanced parenthesis", i,
                            "unexpected ')' without a matching '('")
            opened.pop()
        elif c == F.SEP:
            raise _Fail("NUL characters are not allowed", i, "")
        i += 1
    if opened:
        raise _Fail("unbalanced parenthesis", n,
                    f"expected ')' (to close the '(' at position {opened[-1]})")


def _syntax_fail(text, exc) -> _Fail:
    # lark loads with the first query (see _make_transformer)
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        ttype = tok.type
        pos = len(text) if ttype == "$END" else tok.start_pos
        expected = exc.expected
        shown = "end of query" if ttype == "$END" else repr(str(tok))
    elif isinstance(exc, UnexpectedCharacters):
        ttype = None
        pos = exc.pos_in_stream
        expected = exc.allowed or set()
        shown = repr(text[pos])
    else:  # UnexpectedEOF and others
        ttype = "$END"
        pos = len(text)
        expected = getattr(exc, "expected", None) or set()
        shown = "end of query"
    before = text[:pos].rstrip()
    kw = _KEYWORD_AT_END.search(before)
    if ttype in ("_AND", "_OR") and (not before or before.endswith("(")):
        return _Fail(f"dangling operator '{tok}'", pos,
                     f"expected a search term before '{tok}'")
    if kw and ("WORD" in expected or "LPAR" in expected):
        op = kw.group(1)
        return _Fail(f"dangling operator '{op}'", pos,
                     f"expected a search term after '{op}'")
    if ttype == "RPAR" and before.endswith("("):
        return _Fail("empty parentheses", pos,
                     "expected a search term inside '( )'")
    if "VALUE" in expected or "OPERATOR" in expected:
        return _Fail("missing value", pos,
                     "expected a value after ':' (use \"\" for an empty "
                     "value)")
    if "EXTRACTOR_NAME" in expected:
        return _Fail("missing extractor name", pos,
                     "expected an extractor name, e.g. metadata[bids_dataset]")
    if "SEGMENT" in expected:
        return _Fail("missing key name", pos,
                     "expected a key name after '.', e.g. "
                     "metadata[bids_dataset].Name")
    if "RSQB" in expected and ttype == "$END":
        return _Fail("unbalanced bracket", pos, "expected ']'")
    if "COLON" in expected and ttype != "COLON":
        return _Fail("missing ':' after the field", pos,
                     "expected ':' and a value after the field")
    return _Fail(f"unexpected {shown}", pos, _describe_expected(expected))


#: How deeply NOT and parentheses may nest (evaluation recurses).
MAX_DEPTH = 100


def _check_depth(tree):
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            pos = 0
            while not isinstance(node, Term):
                node = node.item if isinstance(node, Not) else node.items[0]
            pos = node.position
            raise _Fail("query nested too deeply", pos,
                        f"expected at most {MAX_DEPTH} levels of NOT and "
                        "parentheses")
        if isinstance(node, Not):
            stack.append((node.item, depth + 1))
        elif isinstance(node, (And, Or)):
            stack.extend((x, depth + 1) for x in node.items)


# -- entry point ----------------------------------------------------------------------------------

def parse(text: str):
    """Parse a query; return its tree (see the module doc).

    An empty or whitespace-only query is :class:`MatchAll`. Raises
    :class:`QueryError` for anything invalid.
    """
    if not isinstance(text, str):
        raise QueryError(f"a query must be a string, not {type(text).__name__}")
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(f"query too long ({len(text)} characters)",
                         text[:60] + "...", 60,
                         f"expected at most {MAX_QUERY_LENGTH} characters")
    return _parse_cached(text)


@lru_cache(maxsize=512)
def _parse_cached(text: str):
    # lark loads with the first query (see _make_transformer)
    from lark.exceptions import UnexpectedInput, VisitError

    try:
        _prescan(text)
        if not text.strip():
            return MatchAll()
        try:
            _current.text = text
            try:
                tree = _parser().parse(text)
            finally:
                _current.text = None
            _check_depth(tree)
            return tree
        except VisitError as e:  # pragma: no cover - depends on lark mode
            if isinstance(e.orig_exc, _Fail):
                raise e.orig_exc
            raise
        except UnexpectedInput as e:
            raise _syntax_fail(text, e)
    except _Fail as f:
        raise QueryError(f.reason, text, f.position, f.expected) from None
