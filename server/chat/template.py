"""Render chat messages with the model's own Jinja chat template (GGUF ``tokenizer.chat_template``).

Mirrors llama_cpp.llama_chat_format.Jinja2ChatFormatter and Transformers: a sandboxed Jinja
environment, ``trim_blocks``/``lstrip_blocks``, ``raise_exception``, ``strftime_now``, and the
``bos_token``/``eos_token`` variables. A GGUF without a template gets ChatML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from server.engine.types import InvalidRequestError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise_exception(message: str) -> None:
    raise InvalidRequestError(f"The chat template rejected the messages: {message}")


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


class ChatTemplate:
    """A compiled chat template plus the special-token strings it may reference."""

    def __init__(self, template: str | None, *, bos_token: str, eos_token: str) -> None:
        self.source = template or CHATML_TEMPLATE
        self.is_fallback = template is None
        self.bos_token = bos_token
        self.eos_token = eos_token
        environment = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[jinja2.ext.loopcontrols],
        )
        environment.filters["tojson"] = _tojson
        environment.globals["raise_exception"] = _raise_exception
        environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = environment.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"The model's chat template is not valid Jinja: {exc}") from exc

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """The prompt text for ``messages`` (``[{"role": ..., "content": ...}, ...]``)."""
        if not messages:
            raise InvalidRequestError("messages is empty: send at least one message.")
        for index, message in enumerate(messages):
            if "role" not in message or "content" not in message:
                raise InvalidRequestError(
                    f"messages[{index}] needs both 'role' and 'content' (got keys "
                    f"{sorted(message)})."
                )
        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except InvalidRequestError:
            raise
        except jinja2.TemplateError as exc:
            raise InvalidRequestError(f"The chat template failed on these messages: {exc}") from exc
