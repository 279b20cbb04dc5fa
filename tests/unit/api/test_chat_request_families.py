"""A chat request prepared for a model family's template: its call format, and a forced call
after a template that opened <think> in the prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.api.openai.chat_request import prepare_chat
from server.api.openai.protocol import ChatCompletionRequest

TEMPLATES = Path(__file__).resolve().parents[2] / "fixtures" / "chat_templates"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


class TextGeneration:
    """Prepares prompts as text: each 'token' is one character, so the prompt reads back."""

    def __init__(self, template: str) -> None:
        self.template_source = (TEMPLATES / template).read_text()

    def chat_prompt(self, messages: Any, **template_vars: Any) -> list[int]:
        return []

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return [ord(char) for char in text]

    def resolve_max_tokens(self, requested: int | None, prompt_tokens: int) -> int:
        return 64


def _request(**extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS, **extra}
    )


def test_a_forced_call_closes_the_thinking_the_template_opened() -> None:
    generation = TextGeneration("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
    chat = prepare_chat(_request(tool_choice="required"), generation)  # type: ignore[arg-type]
    assert chat.tool_format.name == "deepseek"
    written = "".join(chr(token) for token in chat.prompt)
    assert written == "</think>\n\n" + chat.prefill
    assert chat.prefill.startswith("<｜tool▁calls▁begin｜>")
    assert not chat.thinking_open  # the output is the call, not thinking


def test_auto_after_an_opened_think_reads_the_output_as_thinking_first() -> None:
    generation = TextGeneration("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
    chat = prepare_chat(_request(), generation)  # type: ignore[arg-type]
    assert chat.reasoning and chat.thinking_open and chat.prompt == []


def test_a_template_whose_model_writes_its_own_think_is_not_opened() -> None:
    generation = TextGeneration("Qwen-Qwen3-0.6B.jinja")
    choice = {"type": "function", "function": {"name": "get_weather"}}
    chat = prepare_chat(_request(tool_choice=choice), generation)  # type: ignore[arg-type]
    assert chat.tool_format.name == "qwen3" and chat.reasoning and not chat.thinking_open
    assert "".join(chr(token) for token in chat.prompt) == chat.prefill
