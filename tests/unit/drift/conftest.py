"""Drift fixtures: observations from two topics and a hashing bag-of-words embedder.

The embedder is a stand-in for the real one (tests/integration and bench/drift.py use
all-MiniLM-L6-v2): it maps words to fixed random directions, so questions that share words
land close together and two topics with different vocabularies land apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from server.drift.observation import Observation

COOKING = [
    "bake",
    "roast",
    "simmer",
    "dough",
    "oven",
    "flour",
    "sauce",
    "knife",
    "pan",
    "recipe",
    "garlic",
    "butter",
]
NETWORK = [
    "router",
    "packet",
    "subnet",
    "firewall",
    "dns",
    "latency",
    "vlan",
    "switch",
    "port",
    "proxy",
    "tls",
    "cable",
]
FILLER = [
    "how",
    "do",
    "i",
    "what",
    "is",
    "the",
    "best",
    "way",
    "to",
    "my",
    "for",
    "a",
    "with",
    "why",
]


class HashingEmbedder:
    """Unit-length bag-of-words vectors; counts its calls so tests can see caching."""

    def __init__(self, dimension: int = 64) -> None:
        self.dimension = dimension
        self.calls = 0
        self.embedded = 0

    def _word(self, word: str) -> npt.NDArray[np.float64]:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(self.dimension)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        self.embedded += len(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            v = sum((self._word(w) for w in text.split()), np.zeros(self.dimension))
            norm = float(np.linalg.norm(v))
            out[i] = v / norm if norm else v
        return out


def questions(topic: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` questions mixing filler words with three words of ``topic``."""
    return [" ".join([*rng.choice(FILLER, 4), *rng.choice(topic, 3)]) for _ in range(n)]


def observations(
    texts: list[str],
    rng: np.random.Generator,
    *,
    score_mean: float = 0.6,
    no_context_rate: float = 0.1,
    tokens_mean: float = 80.0,
    length_rate: float = 0.05,
    at: float = 1_000.0,
) -> list[Observation]:
    """One ``ask`` observation per text with outputs drawn around the given figures."""
    out = []
    for i, text in enumerate(texts):
        no_context = bool(rng.random() < no_context_rate)
        out.append(
            Observation(
                at=at + i,
                route="ask",
                query=text,
                finish_reason="no_context"
                if no_context
                else ("length" if rng.random() < length_rate else "stop"),
                answer_tokens=0 if no_context else int(rng.poisson(tokens_mean)),
                top_score=float(np.clip(rng.normal(score_mean, 0.08), -1, 1)),
                no_context=no_context,
            )
        )
    return out
