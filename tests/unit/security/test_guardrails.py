"""The output guardrail's incremental scan says what a whole-text scan says, at every step."""

from __future__ import annotations

import itertools
import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from server.security.guardrails import Guardrails, Rule

RULES = [
    r"\b(bomb|explosive)s?\b",  # bounded, word boundaries at both ends
    r"kill\s{1,3}switch",
    r"^start",  # anchored at the real start of the text only
    r"(?<=x)yz",  # lookbehind into the text before the window
    r"ab{2,6}c",
    r"end$",  # true only while the text ends there
    r"foo(?=bar)",  # lookahead: rescanned whole
    r"q.*z",  # unbounded: rescanned whole
    r"(ab)\1",  # backreference: rescanned whole
    r"\Bomb",
    r"x-\b",  # a match that ends where the old text ended, true only once the next char comes
]
GUARDRAILS = Guardrails([Rule(f"r{i}", re.compile(p, re.IGNORECASE)) for i, p in enumerate(RULES)])
ALPHABET = "abcxyzqkilswtchfroendmBOMEXPLV \n.-"


def _steps(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(alphabet=ALPHABET, max_size=120)
    | st.lists(
        st.sampled_from(
            [
                "bomb",
                "s",
                " ",
                "kill",
                "  switch",
                "xyz",
                "abbbc",
                "foo",
                "bar",
                "q",
                "z",
                "abab",
                "end",
                "start",
                "explosive",
                "x-",
                "x",
            ]
        ),
        max_size=30,
    ).map("".join),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=40),
)
def test_incremental_scan_equals_a_whole_text_scan_at_every_step(
    text: str, cuts: list[int]
) -> None:
    scanner = GUARDRAILS.output_scanner()
    so_far = ""
    for piece in _steps(text, cuts):
        so_far += piece
        got = scanner.feed(piece)
        assert got == GUARDRAILS.violation(so_far), (so_far, piece)
        if got is not None:
            break  # the generation stops at the first violation


def test_bounded_rules_know_their_width_and_unbounded_ones_are_rescanned() -> None:
    widths = {rule.pattern.pattern: rule.max_width for rule in GUARDRAILS.rules}
    assert widths[r"\b(bomb|explosive)s?\b"] == 10
    assert widths[r"q.*z"] is None
    assert widths[r"foo(?=bar)"] is None
    assert widths[r"(ab)\1"] is None


def test_a_long_output_is_not_rescanned_at_every_token() -> None:
    # 20 000 tokens: whole-text rescans touch ~200 M characters (seconds); the tail scan ~0.5 M.
    guardrails = Guardrails([Rule("weapons", re.compile(r"\b(bomb|explosive)s?\b", re.I))])
    scanner = guardrails.output_scanner()
    started = time.perf_counter()
    for _ in range(20_000):
        assert scanner.feed(" harmless") is None
    incremental = time.perf_counter() - started
    started = time.perf_counter()
    text = ""
    for _ in range(2_000):  # a tenth of the tokens, the whole-text way
        text += " harmless"
        guardrails.violation(text)
    whole_tenth = time.perf_counter() - started
    assert incremental < whole_tenth * 10 / 5  # at least 5x less than rescanning (far more)
