"""Read a chat dataset in TRL's conversational SFT format and check every row before training.

One JSON object per line, ``{"messages": [{"role": ..., "content": ...}, ...]}`` ending with an
assistant message (the target), or TRL's prompt/completion split
``{"prompt": [...messages], "completion": [{"role": "assistant", ...}]}``. Nothing here imports
torch: a bad file is refused in a second, before the base model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifacts.names import DATASET_TRAIN
from convert.errors import ConvertError

ROLES = ("system", "user", "assistant")
MAX_ROWS = 100_000
MAX_CONTENT_CHARS = 32_000

Message = dict[str, str]


@dataclass(frozen=True)
class Dataset:
    """The training conversations and where they came from."""

    path: Path  # the JSONL file read
    conversations: list[list[Message]]
    sha256: str  # of the file's bytes: the lineage key of the dataset

    def __len__(self) -> int:
        return len(self.conversations)


def resolve_train_file(data: Path) -> Path:
    """``data`` itself when it is a file, else ``data/train.jsonl`` (what the export writes)."""
    if data.is_file():
        return data
    if data.is_dir():
        candidate = data / DATASET_TRAIN
        if candidate.is_file():
            return candidate
        raise ConvertError(
            f"dataset folder {data} has no {DATASET_TRAIN}",
            "pass the folder written by 'ggserve feedback export --format sft' or a .jsonl file",
        )
    raise ConvertError(f"dataset {data} does not exist", "pass a folder or a .jsonl file")


def load_dataset(data: Path) -> Dataset:
    """Read and validate every row of the dataset at ``data`` (a folder or a .jsonl file)."""
    path = resolve_train_file(data)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConvertError(f"cannot read dataset {path}: {exc.strerror}", "check the path") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConvertError(
            f"dataset {path} is not UTF-8 (byte {exc.start})", "re-export it as UTF-8 JSONL"
        ) from exc
    conversations: list[list[Message]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(conversations) >= MAX_ROWS:
            raise ConvertError(
                f"dataset {path} has more than {MAX_ROWS} rows",
                "train on a sample: a LoRA for a few facts needs far fewer",
            )
        conversations.append(parse_row(line, f"{path.name} line {number}"))
    if not conversations:
        raise ConvertError(
            f"dataset {path} has no rows",
            "export accepted corrections first ('ggserve feedback export --format sft')",
        )
    return Dataset(path=path, conversations=conversations, sha256=hashlib.sha256(raw).hexdigest())


def parse_row(line: str, where: str) -> list[Message]:
    """One JSONL row → its messages, the last one the assistant's target; ConvertError if not."""
    fix = 'each line must be {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}'
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConvertError(f"{where}: not JSON ({exc.msg})", fix) from exc
    if not isinstance(row, dict):
        raise ConvertError(f"{where}: a row must be a JSON object", fix)
    if "messages" in row:
        messages = _messages(row["messages"], f"{where}: messages", fix)
    elif "prompt" in row and "completion" in row:
        messages = _messages(row["prompt"], f"{where}: prompt", fix) + _messages(
            row["completion"], f"{where}: completion", fix
        )
    else:
        raise ConvertError(f"{where}: no 'messages' (or 'prompt' + 'completion') field", fix)
    if messages[-1]["role"] != "assistant":
        raise ConvertError(f"{where}: the last message must be the assistant's answer", fix)
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise ConvertError(f"{where}: no user message before the answer", fix)
    if not messages[-1]["content"].strip():
        raise ConvertError(f"{where}: the assistant's answer is empty", fix)
    return messages


def _messages(value: Any, where: str, fix: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise ConvertError(f"{where} must be a non-empty list of messages", fix)
    messages: list[Message] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConvertError(f"{where}[{index}] is not an object", fix)
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise ConvertError(f"{where}[{index}].role must be one of {', '.join(ROLES)}", fix)
        if not isinstance(content, str):
            raise ConvertError(f"{where}[{index}].content must be a string", fix)
        if len(content) > MAX_CONTENT_CHARS:
            raise ConvertError(
                f"{where}[{index}].content is {len(content)} characters "
                f"(limit {MAX_CONTENT_CHARS})",
                "shorten the message or drop the row",
            )
        messages.append({"role": role, "content": content})
    return messages
