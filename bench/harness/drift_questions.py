"""Synthetic user questions by topic, for the drift benchmark.

Each topic has its own templates and slot words, and all topics share a set of generic
phrasings ("what is the best way to …"), so two topics differ in what is asked about, not in
a give-away word pattern. ``generate`` is deterministic for a given seed.
"""

from __future__ import annotations

import random

GENERIC = [
    "What is the best way to {verb} {thing}?",
    "How do I {verb} {thing} without making mistakes?",
    "Can you explain how to {verb} {thing}?",
    "Is it a good idea to {verb} {thing} every week?",
    "Why does my attempt to {verb} {thing} keep failing?",
    "Give me three tips to {verb} {thing}.",
    "What should a beginner know before trying to {verb} {thing}?",
    "How long does it take to {verb} {thing}?",
]

TOPICS: dict[str, dict[str, list[str]]] = {
    "cooking": {
        "verb": ["bake", "roast", "braise", "season", "marinate", "caramelize", "slice", "store"],
        "thing": [
            "sourdough bread",
            "a whole chicken",
            "root vegetables",
            "a beef stew",
            "salmon fillets",
            "onions",
            "homemade pasta",
            "a chocolate cake",
            "rice",
        ],
        "own": [
            "What temperature should the oven be for {thing}?",
            "Which spices go well with {thing}?",
            "My {thing} came out dry, what went wrong?",
            "Can I freeze {thing} and reheat it later?",
        ],
    },
    "gardening": {
        "verb": ["prune", "water", "fertilize", "repot", "plant", "propagate", "mulch"],
        "thing": [
            "tomato plants",
            "a lemon tree",
            "roses",
            "succulents",
            "basil",
            "hydrangeas",
            "a vegetable bed",
            "orchids",
            "the lawn",
        ],
        "own": [
            "Why are the leaves of my {thing} turning yellow?",
            "How much sun do {thing} need?",
            "When is the right season to plant {thing}?",
            "Which pests attack {thing} and how do I stop them?",
        ],
    },
    "travel": {
        "verb": ["book", "pack for", "plan", "budget for", "insure", "cancel"],
        "thing": [
            "a flight to Lisbon",
            "a train trip across Italy",
            "a weekend in Kyoto",
            "a hiking holiday",
            "a business trip",
            "a family visit abroad",
            "a city break",
        ],
        "own": [
            "Do I need a visa for {thing}?",
            "What documents should I carry on {thing}?",
            "How early should I arrive at the airport for {thing}?",
            "Is travel insurance worth it for {thing}?",
        ],
    },
    "networking": {
        "verb": ["configure", "debug", "secure", "monitor", "segment", "reset"],
        "thing": [
            "a home router",
            "the office firewall",
            "a VLAN",
            "DNS resolution",
            "a VPN tunnel",
            "the Wi-Fi access point",
            "a TLS certificate",
            "port forwarding",
        ],
        "own": [
            "Why is {thing} dropping packets?",
            "Which ports must be open for {thing}?",
            "How do I check the latency of {thing}?",
            "What logs show problems with {thing}?",
        ],
    },
    "finance": {
        "verb": ["open", "compare", "pay off", "invest in", "file taxes for", "refinance"],
        "thing": [
            "a savings account",
            "a mortgage",
            "index funds",
            "a credit card balance",
            "a pension plan",
            "a small business",
            "a car loan",
            "government bonds",
        ],
        "own": [
            "What fees should I expect with {thing}?",
            "How does interest work on {thing}?",
            "Is {thing} a safe choice during inflation?",
            "What records do I need to keep for {thing}?",
        ],
    },
    "cars": {
        "verb": ["service", "jump start", "winterize", "clean", "inspect", "sell"],
        "thing": [
            "an electric car",
            "the brakes",
            "a diesel engine",
            "the tyres",
            "a used hatchback",
            "the car battery",
            "the air conditioning",
            "a motorbike",
        ],
        "own": [
            "What does a warning light about {thing} mean?",
            "How often should I check {thing}?",
            "Why does {thing} make a grinding noise?",
            "What does it cost to repair {thing}?",
        ],
    },
}

REFERENCE_TOPICS = ("cooking", "gardening", "travel")
SHIFTED_TOPICS = ("networking", "finance", "cars")


def question(topic: str, rng: random.Random) -> str:
    """One question about ``topic``: a generic phrasing or one of the topic's own."""
    words = TOPICS[topic]
    templates = GENERIC + words["own"] * 2  # topic phrasings as likely as generic ones
    template = rng.choice(templates)
    return template.format(verb=rng.choice(words["verb"]), thing=rng.choice(words["thing"]))


def generate(topics: tuple[str, ...], n: int, seed: int) -> list[str]:
    """``n`` questions, each about a topic drawn uniformly from ``topics``."""
    rng = random.Random(seed)
    return [question(rng.choice(topics), rng) for _ in range(n)]


def mixture(
    base: tuple[str, ...], new: tuple[str, ...], share_new: float, n: int, seed: int
) -> list[str]:
    """``n`` questions, a ``share_new`` fraction of them about ``new`` topics."""
    rng = random.Random(seed)
    return [question(rng.choice(new if rng.random() < share_new else base), rng) for _ in range(n)]
