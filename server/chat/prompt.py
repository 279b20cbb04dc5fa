"""The model's chat template over its tokenizer: messages → prompt text → prompt tokens.

Built once per loaded model (``ServedModel.chat``), so the template is compiled once, and
used by every route, the warm-up, the agents and the eval gate alike.

Message text never becomes a control token. The rendered prompt is tokenized with
``parse_special`` so that the template's own ``<|im_start|>`` become control tokens; a message
(or a retrieved passage inside one) that contains such a text would open a real turn of its own
(``<|im_end|>\n<|im_start|>system\n…``). Such a message's content is tokenized apart, as
plain text, and spliced in where the template put it.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from server.chat.template import ChatTemplate
from server.engine.types import ChatFormat, InvalidRequestError

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
        self._control = (
            re.compile("|".join(re.escape(t) for t in fmt.control_tokens))
            if fmt.control_tokens
            else None
        )

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
        literal = self._literal_contents(messages)
        if literal:
            return self._tokens_with_literals(
                messages, literal, add_generation_prompt=add_generation_prompt, **template_vars
            )
        text = self.render(messages, add_generation_prompt=add_generation_prompt, **template_vars)
        return self._tokenize(text, add_special=self._adds_bos(text))

    def _adds_bos(self, text: str) -> bool:
        bos = self.template.bos_token
        return not (bos and text.startswith(bos))

    def _literal_contents(self, messages: Sequence[Mapping[str, Any]]) -> dict[int, str]:
        """Messages whose content holds a control token's text: index → content."""
        if self._control is None:
            return {}
        return {
            i: m["content"]
            for i, m in enumerate(messages)
            if isinstance(m.get("content"), str) and self._control.search(m["content"])
        }

    def _tokens_with_literals(
        self,
        messages: Sequence[Mapping[str, Any]],
        literal: dict[int, str],
        *,
        add_generation_prompt: bool,
        **template_vars: Any,
    ) -> list[int]:
        """Render with an unguessable marker in place of each ``literal`` content, tokenize the
        template's text with control tokens parsed and each content as plain text between."""
        nonce = secrets.token_hex(8)
        markers = {f"\ue000{nonce}:{i}\ue001": i for i in literal}
        by_index = {i: marker for marker, i in markers.items()}
        patched = [
            {**m, "content": by_index[i]} if i in literal else m for i, m in enumerate(messages)
        ]
        text = self.render(patched, add_generation_prompt=add_generation_prompt, **template_vars)
        pieces = re.split("(" + "|".join(re.escape(m) for m in markers) + ")", text)
        for marker, index in markers.items():
            if pieces.count(marker) != 1:  # the template changed or repeated the content
                raise InvalidRequestError(
                    f"messages[{index}].content contains the text of a control token, which "
                    "this model's chat template cannot carry as plain text; remove it.",
                    param=f"messages[{index}].content",
                )
        tokens: list[int] = []
        add_bos = self._adds_bos(text)
        for piece in pieces:
            if not piece:
                continue
            if piece in markers:
                content = literal[markers[piece]]
                tokens += self._tokenize(content, add_special=add_bos, parse_special=False)
            else:
                tokens += self._tokenize(piece, add_special=add_bos, parse_special=True)
            add_bos = False
        return tokens
