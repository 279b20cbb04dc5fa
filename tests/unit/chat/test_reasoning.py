"""A reasoning model's <think>…</think> is split from its answer, whole or streamed in pieces
that cut the tags anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.chat.reasoning import (
    ReasoningSplit,
    split_reasoning,
    template_opens_thinking,
    template_thinks,
)

ANSWER = "<think>\nThe user asks for a capital.\n</think>\n\nParis."


def test_thinking_at_the_start_is_reasoning_and_the_rest_content() -> None:
    assert split_reasoning(ANSWER) == ("The user asks for a capital.\n", "Paris.")


def test_an_answer_without_thinking_is_all_content() -> None:
    assert split_reasoning("Paris. <think> is a tag") == ("", "Paris. <think> is a tag")


def test_thinking_cut_short_by_the_budget_stays_reasoning() -> None:
    assert split_reasoning("<think>still going") == ("still going", "")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_streamed_in_any_pieces_it_splits_the_same(size: int) -> None:
    split = ReasoningSplit()
    reasoning = content = ""
    for start in range(0, len(ANSWER), size):
        r, c = split.feed(ANSWER[start : start + size])
        reasoning, content = reasoning + r, content + c
    r, c = split.finish()
    assert (reasoning + r, content + c) == split_reasoning(ANSWER)


def test_a_template_that_knows_the_tags_is_a_reasoning_model() -> None:
    assert template_thinks("{{ '<think>\\n' }}") and not template_thinks("{{ messages }}")


TEMPLATES = Path(__file__).resolve().parents[2] / "fixtures" / "chat_templates"
OPENED = "The user asks for a capital.\n</think>\n\nParis."


def test_a_template_that_opens_thinking_in_the_prompt_is_recognised() -> None:
    r1 = (TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja").read_text()
    qwen3 = (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text()
    assert template_opens_thinking(r1)
    assert not template_opens_thinking(qwen3)  # knows <think>, but the model writes it
    assert not template_opens_thinking("{{ messages }}")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 100])
def test_output_that_starts_inside_thinking_splits_the_same_in_any_pieces(size: int) -> None:
    assert split_reasoning(OPENED, opened=True) == ("The user asks for a capital.\n", "Paris.")
    split = ReasoningSplit(opened=True)
    reasoning = content = ""
    for start in range(0, len(OPENED), size):
        r, c = split.feed(OPENED[start : start + size])
        reasoning, content = reasoning + r, content + c
    r, c = split.finish()
    assert (reasoning + r, content + c) == split_reasoning(OPENED, opened=True)
