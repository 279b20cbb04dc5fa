"""The requests the HTTP benchmarks send: short varied chats, and 1,000-token shared preambles."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

from bench.harness.load import ChatRequest

TOPICS = (
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in detail how a steam engine works.",
    "Describe the history of the printing press.",
    "Write a detailed travel guide for a week in Japan.",
    "Explain photosynthesis to a ten year old, step by step.",
    "Write a long letter from a sailor to his family.",
    "Describe how computers store numbers in memory.",
    "Write an essay about the importance of sleep.",
    "Explain how a bicycle stays upright.",
    "Describe a day in the life of a medieval baker.",
    "Write a guide to growing tomatoes on a balcony.",
    "Explain how vaccines train the immune system.",
    "Describe the water cycle in detail.",
    "Write a short history of the bicycle.",
    "Explain how a refrigerator keeps food cold.",
    "Write a story about a robot learning to paint.",
)

QUESTIONS = (
    "Summarise the rules about travel expenses.",
    "Who approves a purchase above the limit?",
    "What happens when a deadline is missed?",
    "List the steps to report a safety incident.",
    "How many days of notice does a holiday need?",
)

_SUBJECTS = (
    "The finance team",
    "Every project lead",
    "The safety officer",
    "A new employee",
    "The warehouse crew",
    "The support desk",
    "Each regional office",
    "The quality board",
)
_VERBS = (
    "must record",
    "reviews",
    "approves",
    "reports",
    "archives",
    "checks",
    "signs off",
    "escalates",
)
_OBJECTS = (
    "travel expenses above two hundred euros",
    "purchases that exceed the quarterly limit",
    "incidents involving forklifts or ladders",
    "holiday requests with ten days of notice",
    "customer complaints within one working day",
    "supplier invoices before the end of the month",
    "changes to the production schedule",
    "access badges that were lost or stolen",
)
_WHEN = (
    "before the weekly meeting",
    "within three working days",
    "at the end of each quarter",
    "as soon as the manager is informed",
    "using the standard form",
    "in the shared register",
)


def chat_requests(n: int, max_tokens: int, run: str = "") -> list[ChatRequest]:
    """``n`` distinct short chats, cycling through :data:`TOPICS` with a request number.

    ``run`` makes the prompts of one measurement differ from every other measurement's, so no
    server answers a later run from a prompt it cached in an earlier one (they still share the
    chat template's system prompt and the topic, as real traffic does).
    """
    return [
        ChatRequest(
            messages=[
                {"role": "user", "content": f"{TOPICS[i % len(TOPICS)]} (request {i + 1}{run})"}
            ],
            max_tokens=max_tokens,
        )
        for i in range(n)
    ]


@lru_cache(maxsize=1)
def _vocab(model: Path) -> object:
    import llama_cpp

    return llama_cpp.Llama(str(model), vocab_only=True, verbose=False)


def count_tokens(model: Path, text: str) -> int:
    """Tokens of ``text`` with the model's own tokenizer (vocab-only load, no weights)."""
    llm = _vocab(model)
    return len(llm.tokenize(text.encode(), add_bos=False, special=False))  # type: ignore[attr-defined]


def preamble(model: Path, variant: int, n_tokens: int = 1000) -> str:
    """A deterministic handbook-like text of about ``n_tokens`` tokens, different per variant.

    Variants differ from their first word on, so one variant's KV cache never serves another's
    prefix: every variant's first request is a genuinely cold prompt.
    """
    rng = random.Random(variant)
    sentences = [f"Handbook edition {variant + 1}, section overview."]
    text = sentences[0]
    while count_tokens(model, text) < n_tokens:
        section = len(sentences)
        sentences.append(
            f"Rule {section}: {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} "
            f"{rng.choice(_OBJECTS)} {rng.choice(_WHEN)}."
        )
        text = " ".join(sentences)
    while count_tokens(model, text) > n_tokens and len(sentences) > 1:
        sentences.pop()
        text = " ".join(sentences)
    return text


def preamble_request(text: str, question: str, max_tokens: int) -> ChatRequest:
    """The shared preamble as the system message, then one question."""
    return ChatRequest(
        messages=[
            {"role": "system", "content": f"Answer from this handbook only.\n\n{text}"},
            {"role": "user", "content": question},
        ],
        max_tokens=max_tokens,
    )
