"""The model's chat template over its tokenizer: messages → prompt text → prompt tokens.

Built once per loaded model (``ServedModel.chat``), so the template is compiled once, and
used by every route, the warm-up, the agents and the eval gate alike.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from server.chat.template import ChatTemplate
from server.engine.types import ChatFormat

logger = logging.getLogger(__name__)


class Tokenizer(Protocol):
    """The part of an engine a chat prompt needs."""

    @property
    def chat_format(self) -> ChatFormat: ...

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]: ...


class ChatPrompt:
    """Renders and tokenizes chats for one model (ChatML when the GGUF has no usable template)."""

    def __init__(self, model: Tokenizer) -> None:
        fmt = model.chat_format
        try:
            self.template = ChatTemplate(
                fmt.template, bos_token=fmt.bos_token, eos_token=fmt.eos_token
            )
        except ValueError as exc:
            logger.warning("%s; falling back to ChatML", exc)
            self.template = ChatTemplate(None, bos_token=fmt.bos_token, eos_token=fmt.eos_token)
        self._tokenize = model.tokenize

    @property
    def source(self) -> str:
        """The Jinja source in use (whether it renders tools itself decides how tools go in)."""
        return self.template.source

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **template_vars: Any,
    ) -> str:
        """The prompt text of ``messages``; ``template_vars`` are extra variables (``tools``)."""
        return self.template.render(
            messages, add_generation_prompt=add_generation_prompt, **template_vars
        )

    def tokens(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **template_vars: Any,
    ) -> list[int]:
        """The prompt tokens of ``messages``.

        The BOS token is added only when the template did not already write it, so models whose
        template starts with ``{{ bos_token }}`` do not get two.
        """
        text = self.render(messages, add_generation_prompt=add_generation_prompt, **template_vars)
        bos = self.template.bos_token
        return self._tokenize(text, add_special=not (bos and text.startswith(bos)))
