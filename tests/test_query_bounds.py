"""Regular expressions are bounded in time in any thread (a server searches
in worker threads), with one budget per search, and keep Python's ``re``
dialect although the ``regex`` module matches them."""
import re
import threading
import time

import pytest

from benchmarks.generate import generate_records
from datalad_registry_ext.engine import Engine, build
from datalad_registry_ext.query import QueryError, SearchView, parse
from datalad_registry_ext.query.parser import compile_regex

# The parser refuses the textbook exponential patterns ((a+)+$, (a|aa)*,
# backreferences), so the slow pattern here is polynomial: each a* can take
# any share of a run of a's, ~n**5 / 120 tries per start on a run of n. It
# ends with a character class: a required literal would let the matcher (and
# the engine's look-up of literals) skip the records without it.
SLOW = 'url:~"a*a*a*a*a*[xy]"'
SLOW_POSITION = 5           # the caret: the pattern's opening quote
SIMPLE = "url:github"


def _records():
    # long URLs of a's, each alone far beyond any budget, among ordinary
    # generated ones
    slow = [{"url": f"https://q.org/{i}/" + "a" * 3000 + "!", "metadata": []}
            for i in range(8)]
    return list(generate_records(300, seed=5)) + slow


@pytest.fixture(scope="module")
def records():
    return _records()


@pytest.fixture(scope="module")
def db(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("bounds") / "bounds.sqlite"
    build(path, records, "fp")
    return path


def _searcher(kind, db, records, timeout):
    """count(query text) of an Engine or of the reference SearchView."""
    if kind == "engine":
        eng = Engine.open(db, "fp", regex_timeout=timeout)
        return eng.count, eng.close
    view = SearchView(records, regex_timeout=timeout)
    return view.count, lambda: None


def _in_thread(fn, *args):
    """Run fn(*args) in a new thread: (result or exception, wall seconds,
    process CPU seconds)."""
    out = {}

    def run():
        t0, c0 = time.monotonic(), time.process_time()
        try:
            out["result"] = fn(*args)
        except Exception as e:
            out["result"] = e
        out["wall"] = time.monotonic() - t0
        out["cpu"] = time.process_time() - c0

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the search did not stop"
    return out["result"], out["wall"], out["cpu"]


def _is_timeout(err, query=SLOW, position=SLOW_POSITION):
    return (isinstance(err, QueryError)
            and err.reason == "regular expression took too long"
            and err.position == position and err.query == query)


@pytest.mark.parametrize("kind", ["engine", "view"])
def test_timeout_in_a_worker_thread(kind, db, records):
    budget = 0.3
    count, close = _searcher(kind, db, records, budget)
    try:
        err, wall, cpu = _in_thread(count, SLOW)
        assert _is_timeout(err), err
        # the regex module counts the process's CPU time: that is what the
        # budget bounds tightly; wall-clock time also depends on what else
        # runs on the machine, hence the looser bound
        assert cpu < budget + 0.5, cpu
        assert wall < budget + 3, wall
        # the searcher stays usable
        assert count(SIMPLE) > 0
    finally:
        close()


@pytest.mark.parametrize("kind", ["engine", "view"])
def test_four_slow_searches_at_once_leave_others_answering(kind, db, records):
    # A budget longer than the bound on the simple query: if a match held
    # the GIL (the regex module releases it, concurrent=True), the simple
    # searches would wait for it.
    budget = 1.5
    count, close = _searcher(kind, db, records, budget)
    expected = count(SIMPLE)
    results = [None] * 4

    def slow(k):
        results[k] = _in_thread(count, SLOW)

    threads = [threading.Thread(target=slow, args=(k,)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        # while they run, simple searches one after another: the time
        # between two answers (a held GIL would stop this thread too)
        marks = [time.monotonic()]
        while any(t.is_alive() for t in threads):
            assert _in_thread(count, SIMPLE)[0] == expected
            marks.append(time.monotonic())
            time.sleep(0.02)
        for t in threads:
            t.join()
    finally:
        close()
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    assert len(gaps) > 1, "the slow searches ended before the simple ones ran"
    assert max(gaps) < 1.0, gaps
    for err, wall, _ in results:
        assert _is_timeout(err), err
        # four matches share the process's CPU time: each ends no later
        # than one alone would
        assert wall < budget + 3, wall


def test_one_budget_per_search_not_per_term(db, records):
    # five slow terms: one budget for the search, not five
    query = " OR ".join(SLOW.replace("[xy]", f"[xy]{{{i}}}")
                        for i in range(1, 6))
    budget = 0.3
    for kind in ("engine", "view"):
        count, close = _searcher(kind, db, records, budget)
        try:
            err, wall, cpu = _in_thread(count, query)
        finally:
            close()
        assert isinstance(err, QueryError) and "too long" in err.reason, err
        assert cpu < 2 * budget + 0.5, (kind, cpu)


def test_engine_and_view_share_the_budget_of_records_matched_in_python(
        tmp_path):
    # a record SQLite cannot store as text (a lone surrogate) is matched by
    # the reference over the stored records, within the statement's budget
    recs = [{"url": "https://q.org/\ud800/" + "a" * 3000 + "!"},
            {"url": "https://q.org/b/" + "a" * 3000 + "!"}]
    build(tmp_path / "py.sqlite", recs, "fp")
    with Engine.open(tmp_path / "py.sqlite", "fp", regex_timeout=0.3) as eng:
        err, wall, cpu = _in_thread(eng.count, SLOW)
        assert _is_timeout(err), err
        assert cpu < 2 * 0.3 + 0.5, cpu


# -- the dialect: Python's re --------------------------------------------------

RE_PATTERNS = [
    r"^v?1\.", r"github\.com/(OpenNeuroDatasets|datalad)/", r"^v\d+\.\d+$",
    r"^j(ames|im) ", r"(?i)caf[eé]", r"\bds\d{6}\b", r"(?P<x>a)b", r"a{,3}b",
    r"[]a]", r"[^]a]", r"(?x) a b # comment", r"(?s)a.b", r"(?m)^b",
    r"(?a)\w+", r"\N{LATIN SMALL LETTER E WITH ACUTE}", r"(?>a+)b", r"a++b",
    r"(?<=a)b", r"(?<!a)b", r"(?=b)", r"\Aa\Z", r"[[:alpha:]]",
    r"[x[:digit:]]+", r"\[:a]", r"[:alpha:]", r"[a-z--b]", r"[a&&b]",
]
TEXTS = ["v1.2", "https://github.com/datalad/x", "james ", "café", "ds000105",
         "ab", "aab", "]", "a\nb", "é", "x", "l]", "5]", "[:a]", ":", "&",
         "-", "b--", "abc", "", "alpha:", "x1]"]


# re warns of sets that may nest in a future version ([[, --, &&)
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("pattern", RE_PATTERNS)
def test_patterns_mean_what_re_means(pattern):
    # compared with re on the lowercased texts, as they are searched
    expected = re.compile(pattern, re.IGNORECASE)
    got = compile_regex(pattern)
    for text in TEXTS:
        m1, m2 = expected.search(text), got.search(text)
        assert (m1 and m1.span()) == (m2 and m2.span()), (pattern, text)
    parse(f'url:~"{pattern}"'.replace("\n", " "))  # accepted by the parser


@pytest.mark.parametrize("pattern,position", [
    ("(", 6),          # re's error and position, as before
    ("a{2,1}", 8),
    (r"\p{L}", 6),     # regex syntax that re does not know
    ("(?|a|b)", 7),
])
def test_invalid_patterns_are_refused_when_parsed(pattern, position):
    query = f'url:~"{pattern}"'
    with pytest.raises(QueryError) as ei:
        parse(query)
    assert ei.value.reason.startswith("invalid regular expression"), \
        ei.value.reason
    assert ei.value.position == position


@pytest.mark.parametrize("pattern", [
    r"[^\W\w]", r"[^\d\D]", r"[^a\s\S]", r"x[^\w\W]y"])
def test_negated_class_and_complement_is_refused(pattern):
    # re: matches nothing; regex 2026.5 fails to compile it, 2026.11 matches
    # every character: refused whichever release is installed
    with pytest.raises(QueryError) as ei:
        parse(f'url:~"{pattern}"')
    assert ei.value.reason.startswith("invalid regular expression"), \
        ei.value.reason
    assert "complement" in ei.value.reason
    assert ei.value.position == 6


@pytest.mark.parametrize("pattern", [r"[\w\W]", r"[^\w\d]", r"[^\W]"])
def test_other_sets_of_classes_mean_what_re_means(tmp_path, pattern):
    import re
    recs = [{"url": "https://q.org/a b-1"}, {"url": "---"}]
    query = f'url:~"{pattern}"'
    expected = [i for i, r in enumerate(recs)
                if re.search(pattern, r["url"], re.I)]
    build(tmp_path / "c.sqlite", recs, "fp")
    with Engine.open(tmp_path / "c.sqlite", "fp") as eng:
        assert sorted(recs.index({"url": r["url"]}) for r in eng.page(query)
                      ) == expected
    assert SearchView(recs).search(query) == expected


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_posix_class_is_re_literal_in_engine_and_view(tmp_path):
    # re reads [[:alpha:]] as a set of "[:alph" followed by "]"
    recs = [{"url": "https://q.org/l]"}, {"url": "https://q.org/b"}]
    build(tmp_path / "p.sqlite", recs, "fp")
    with Engine.open(tmp_path / "p.sqlite", "fp") as eng:
        assert [r["url"] for r in eng.page('url:~"[[:alpha:]]$"')] == [
            "https://q.org/l]"]
    assert SearchView(recs).search('url:~"[[:alpha:]]$"') == [0]
