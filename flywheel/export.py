"""Curated feedback → chat-format JSONL for TRL (SFT, DPO, KTO), split, de-duplicated, carded.

Formats (TRL's conversational dataset conventions; every message is ``{"role", "content"}``):

- ``sft``: ``{"messages": [...prompt, {"role": "assistant", "content": TARGET}]}`` where the
  target is an *accepted* correction (and, with ``include_positive``, an answer rated good
  that a curator accepted);
- ``dpo``: ``{"prompt": [...], "chosen": [assistant: correction], "rejected": [assistant:
  model answer]}`` for accepted corrections that differ from the answer;
- ``kto``: ``{"prompt": [...], "completion": [assistant: answer], "label": bool}`` from the
  rating's polarity (3 stars is neutral and skipped), plus accepted corrections labelled true.

A 👍 is any client's say-so: a key could elicit a bad answer, upvote it and have it trained.
So an answer rated good becomes a positive example (SFT with ``include_positive``, KTO's
``true`` label) only when a curator accepted the row (``ggserve feedback label --accept``);
``uncurated_positive`` is the operator's explicit opt-out. Every row carries
``metadata: {"response_id", "key_id"}`` (trainers ignore it) so a tenant's rows can be found
and erased after export; ``key_ids`` exports only the given tenants' responses.

The split is a hash of the prompt, so one prompt never lands in both splits and the same
database always gives the same files, byte for byte; the card (``README.md`` with the
``datasets`` YAML header, and ``card.json``) records counts, dates, model versions and sha256s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from artifacts.names import DATASET_CARD, DATASET_EVAL, DATASET_README, DATASET_TRAIN
from server.feedback.records import Interaction
from server.feedback.store import FeedbackStore, StoredFeedback

ExportFormat = Literal["sft", "dpo", "kto"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
SPLIT_FILES = {"train": DATASET_TRAIN, "eval": DATASET_EVAL}
SPLITS = tuple(SPLIT_FILES)
_OWNED = {*SPLIT_FILES.values(), DATASET_README, DATASET_CARD}

Message = dict[str, str]


class ExportError(ValueError):
    """The export cannot run as asked (bad format, fraction or output folder)."""


@dataclass(frozen=True)
class Example:
    """One output row and what it came from."""

    row: dict[str, Any]
    prompt_key: str
    source: Interaction


@dataclass
class ExportReport:
    """What ``export_dataset`` wrote; also the content of ``card.json``."""

    format: ExportFormat
    out_dir: str
    counts: dict[str, int]
    skipped: dict[str, int]
    files: dict[str, str]  # file name → sha256
    dataset_sha256: str
    date_range: tuple[str, str] | None
    model_versions: dict[str, int]
    eval_fraction: float
    split_seed: str
    key_ids: dict[str, int] = field(default_factory=dict)  # rows per tenant (API key id)
    key_filter: list[str] | None = None  # the --key-id filter, when one was given
    generated_at: str = field(default_factory=lambda: _iso(time.time()))


def export_dataset(
    db: FeedbackStore | Path,
    fmt: ExportFormat,
    out: Path,
    *,
    eval_fraction: float = 0.1,
    split_seed: str = "ggserve",
    include_positive: bool = False,
    uncurated_positive: bool = False,
    since: float | None = None,
    until: float | None = None,
    key_ids: Collection[str] | None = None,
) -> ExportReport:
    """Write the splits (``train.jsonl``, ``eval.jsonl``) and the card into ``out``.

    ``key_ids``: only responses made with these API key ids (None: every key; empty: none).
    ``uncurated_positive``: take any client's 👍 as a positive, not only curator-accepted ones.
    """
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ExportError(f"eval fraction must be in [0, 1), not {eval_fraction}")
    wanted = None if key_ids is None else set(key_ids)
    _check_out_dir(out)
    store = db if isinstance(db, FeedbackStore) else FeedbackStore(db, create=False)
    rows = [
        item
        for item in store.all_feedback()
        if (since is None or item.interaction.created_at >= since)
        and (until is None or item.interaction.created_at < until)
        and (wanted is None or item.interaction.key_id in wanted)
    ]
    skipped: Counter[str] = Counter()
    policy = _Positives(include_positive, uncurated_positive)
    examples = _dedupe(_examples(rows, fmt, policy, skipped), skipped)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for example in examples:
        splits[_split_of(example.prompt_key, split_seed, eval_fraction)].append(example)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)  # a new folder: owner only
    files = {
        SPLIT_FILES[name]: _write_jsonl(out / SPLIT_FILES[name], splits[name]) for name in SPLITS
    }
    dataset_sha = hashlib.sha256(
        "".join(f"{name}:{files[name]}\n" for name in sorted(files)).encode()
    ).hexdigest()
    times = [example.source.created_at for example in examples]
    report = ExportReport(
        format=fmt,
        out_dir=str(out),
        counts={name: len(splits[name]) for name in SPLITS},
        skipped=dict(sorted(skipped.items())),
        files=files,
        dataset_sha256=dataset_sha,
        date_range=(_iso(min(times)), _iso(max(times))) if times else None,
        model_versions=dict(sorted(Counter(e.source.model.label for e in examples).items())),
        eval_fraction=eval_fraction,
        split_seed=split_seed,
        key_ids=dict(sorted(Counter(e.source.key_id for e in examples).items())),
        key_filter=None if wanted is None else sorted(wanted),
    )
    _atomic_write(out / DATASET_CARD, json.dumps(asdict(report), indent=2) + "\n")
    _atomic_write(out / DATASET_README, _card_markdown(report))
    return report


@dataclass(frozen=True)
class _Positives:
    """Which answers rated good may become positive examples."""

    include: bool  # SFT: train on answers rated good too, not only accepted corrections
    uncurated: bool  # operator's opt-out: any client's 👍 counts, not only a curator-accepted one

    def allows(self, item: StoredFeedback) -> bool:
        if item.feedback.rating.polarity <= 0:
            return False
        status = item.correction_status
        return status == "accepted" or (self.uncurated and status != "rejected")


def _examples(
    rows: list[StoredFeedback], fmt: ExportFormat, positives: _Positives, skipped: Counter[str]
) -> list[Example]:
    out: list[Example] = []
    for item in rows:
        source = item.interaction
        prompt = _prompt_messages(source)
        if prompt is None:
            skipped["no_chat_content"] += 1
            continue
        key = _digest(prompt)
        accepted = item.feedback.correction if item.correction_status == "accepted" else None
        answer = source.answer or None
        made = 0
        if fmt == "sft":
            targets = [accepted] if accepted else []
            if positives.include and answer and positives.allows(item):
                targets.append(answer)
            for target in targets:
                out.append(Example({"messages": [*prompt, _assistant(target)]}, key, source))
                made += 1
        elif fmt == "dpo":
            if accepted and answer and accepted.strip() != answer.strip():
                pair: dict[str, Any] = {
                    "prompt": prompt,
                    "chosen": [_assistant(accepted)],
                    "rejected": [_assistant(answer)],
                }
                out.append(Example(pair, key, source))
                made += 1
        else:
            polarity = item.feedback.rating.polarity
            if answer and (polarity < 0 or positives.allows(item)):
                row: dict[str, Any] = {
                    "prompt": prompt,
                    "completion": [_assistant(answer)],
                    "label": polarity > 0,
                }
                out.append(Example(row, key, source))
                made += 1
            if accepted:
                row = {"prompt": prompt, "completion": [_assistant(accepted)], "label": True}
                out.append(Example(row, key, source))
                made += 1
        if not made:
            skipped[_why_not(item, fmt, answer, positives)] += 1
    return out


def _why_not(
    item: StoredFeedback, fmt: ExportFormat, answer: str | None, positives: _Positives
) -> str:
    if fmt == "kto" and item.feedback.rating.polarity == 0 and not item.feedback.correction:
        return "neutral_rating"
    wants_positive = fmt == "kto" or (fmt == "sft" and positives.include)
    if (
        wants_positive
        and answer
        and item.feedback.rating.polarity > 0
        and not positives.allows(item)
    ):
        return "positive_not_curated"
    if fmt != "kto" and not item.feedback.correction:
        return "no_correction"
    if item.feedback.correction and item.correction_status != "accepted":
        return f"correction_{item.correction_status}"
    if not answer:
        return "no_answer"
    return "correction_equals_answer"


def _prompt_messages(source: Interaction) -> list[Message] | None:
    """The stored request as plain ``{role, content}`` messages, or None (no content)."""
    if not source.messages:
        return None
    messages: list[Message] = []
    for message in source.messages:
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        if not isinstance(role, str) or not isinstance(content, str):
            return None
        messages.append({"role": role, "content": content})
    return messages or None


def _dedupe(examples: list[Example], skipped: Counter[str]) -> list[Example]:
    seen: set[str] = set()
    kept: list[Example] = []
    for example in examples:
        digest = _digest(example.row)
        if digest in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(digest)
        kept.append(example)
    return kept


def _split_of(prompt_key: str, seed: str, eval_fraction: float) -> str:
    bucket = int(hashlib.sha256(f"{seed}:{prompt_key}".encode()).hexdigest()[:16], 16)
    return "eval" if bucket / 2**64 < eval_fraction else "train"


def _assistant(content: str) -> Message:
    return {"role": "assistant", "content": content}


def _digest(value: Any) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()


def _write_jsonl(path: Path, examples: list[Example]) -> str:
    text = "".join(json.dumps(_with_provenance(e), ensure_ascii=False) + "\n" for e in examples)
    _atomic_write(path, text)
    return hashlib.sha256(text.encode()).hexdigest()


def _with_provenance(example: Example) -> dict[str, Any]:
    """The row plus where it came from: a tenant's rows can be found (and erased) later."""
    source = example.source
    return {**example.row, "metadata": {"response_id": source.response_id, "key_id": source.key_id}}


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` at once, readable by its owner only (0600, whatever the umask):
    exports hold captured prompts and answers, as private as the feedback database."""
    temporary = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()  # a leftover from a crash may carry wider permissions
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)
    os.replace(temporary, path)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWNED)
        if foreign:
            raise ExportError(
                f"{out} holds files this export did not write ({', '.join(foreign[:3])}); "
                "choose an empty or new folder"
            )


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _card_markdown(report: ExportReport) -> str:
    listed = [name for name in SPLITS if report.counts[name]] or ["train"]
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        # `datasets` cannot read an empty JSONL file: list only the splits that have rows.
        *(f"  - split: {name}\n    path: {SPLIT_FILES[name]}" for name in listed),
        "---",
        "",
        f"# ggserve feedback export ({report.format})",
        "",
        f"- generated: {report.generated_at}",
        f"- dataset sha256: `{report.dataset_sha256}`",
        "- examples: " + ", ".join(f"{k} {v}" for k, v in report.counts.items()),
        "- skipped: " + (", ".join(f"{k} {v}" for k, v in report.skipped.items()) or "none"),
        "- interactions from: " + (" to ".join(report.date_range) if report.date_range else "none"),
        "- model versions: "
        + (", ".join(f"`{k}` ({v})" for k, v in report.model_versions.items()) or "none"),
        f"- split: eval fraction {report.eval_fraction}, seed `{report.split_seed}` "
        "(by prompt hash)",
        "- API key ids: "
        + (", ".join(f"`{k}` ({v})" for k, v in report.key_ids.items()) or "none")
        + ("" if report.key_filter is None else " (filtered with --key-id)"),
        "",
        "| file | sha256 |",
        "|---|---|",
        *(f"| {name} | `{digest}` |" for name, digest in report.files.items()),
        "",
    ]
    return "\n".join(lines)
