"""What the OpenAI stream formats share on the wire: usage, the per-token chunk template, and
the error and ``[DONE]`` frames.
"""

import json
from collections.abc import Iterable
from typing import Any

from server.api.generation import (
    Completed,
)
from server.api.openai.protocol import (
    PromptTokensDetails,
    SamplingFields,
    UsageInfo,
)
from server.api.streaming import Frame


def usage_info(done: Completed) -> UsageInfo:
    usage = done.usage
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_prompt_tokens),
    )


def include_usage(request: SamplingFields) -> bool:
    return bool(request.stream_options and request.stream_options.include_usage)


CONTENT_MARKER = "ggserve-content-marker-5f2c"


class ContentTemplate:
    """A streaming chunk rendered once with a marker, then filled per token by concatenation.

    Building and serialising a pydantic chunk per token cost ~0.7 ms of event-loop CPU, on the
    cores the decode threads use; the wire bytes are the same JSON either way.
    """

    def __init__(self, rendered: str) -> None:
        self._head, self._tail = rendered.split(json.dumps(CONTENT_MARKER), 1)

    def render(self, text: str) -> str:
        return self._head + json.dumps(text, ensure_ascii=False) + self._tail


class OpenAIFormat:
    """What chat and completion streams share: the error frame and the closing ``[DONE]``."""

    def error_frames(self, body: dict[str, Any]) -> Iterable[Frame]:
        yield {"data": json.dumps(body)}

    def closing_frames(self) -> Iterable[Frame]:
        yield {"data": "[DONE]"}
