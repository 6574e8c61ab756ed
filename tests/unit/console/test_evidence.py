"""Evidence quotes found in the transcript and marked, with everything else escaped."""

from __future__ import annotations

from services.console.evidence import highlight, locate

TEXTS = [
    "Hello, how can I help?",
    "I  want to CANCEL my plan <script>alert(1)</script>, it\u2019s too expensive.",
    "Call me back tomorrow at 9.",
]


def test_a_quote_is_found_case_and_whitespace_insensitively_and_marked() -> None:
    [found] = locate(["i want to cancel my plan"], TEXTS)
    assert found.spans == ((1, 0, 25),)
    marked = highlight(TEXTS, [found])
    assert str(marked[1]).startswith('<mark class="ev" data-ev="0">I  want to CANCEL my plan</mark> &lt;script&gt;')
    assert str(marked[0]) == "Hello, how can I help?"


def test_parts_joined_by_an_ellipsis_are_each_found_and_apostrophes_match_either_way() -> None:
    [found] = locate(["\u201cI want to cancel \u2026 it's too expensive\u201d"], TEXTS)
    assert [s[0] for s in found.spans] == [1, 1]


def test_overlapping_quotes_share_a_mark_and_an_absent_quote_is_not_marked() -> None:
    located = locate(["cancel my plan", "my plan <script>", "not in the call", None], TEXTS)
    assert [bool(f.spans) for f in located] == [True, True, False, False]
    html = str(highlight(TEXTS, located)[1])
    assert '<mark class="ev" data-ev="0 1">my plan</mark>' in html
    assert '<mark class="ev" data-ev="1"> &lt;script&gt;</mark>' in html
    assert "<script>" not in html


def test_regex_syntax_in_a_quote_is_literal() -> None:
    [found] = locate(["(.*)+"], ["a (.*)+ b"])
    assert found.spans == ((0, 2, 7),)
