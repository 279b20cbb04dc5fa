"""Tool-call formats, one small module per model family, behind one interface (``ToolFormat``).

``detect_format`` picks the family from the model's own chat template, trying the registry in
order (the most specific first, the generic fallback last), as llama.cpp's chat parser picks
its handler from the template text.
"""

from __future__ import annotations

from server.chat.tools.formats.base import ToolFormat
from server.chat.tools.formats.deepseek import DeepSeekFormat
from server.chat.tools.formats.generic import GenericFormat
from server.chat.tools.formats.hermes import HermesFormat, Qwen3Format
from server.chat.tools.formats.llama3 import Llama3Format
from server.chat.tools.formats.mistral import MistralFormat

# Order matters: Qwen3 before Hermes (same wrapper, plus <think>); generic always matches.
REGISTRY: tuple[type[ToolFormat], ...] = (
    DeepSeekFormat,
    MistralFormat,
    Llama3Format,
    Qwen3Format,
    HermesFormat,
    GenericFormat,
)
GENERIC = GenericFormat()
HERMES = HermesFormat()


def detect_format(template_source: str) -> ToolFormat:
    """The tool-call format of the model whose chat template is ``template_source``."""
    for family in REGISTRY:
        if family.detect(template_source):
            return family()
    return GENERIC


def format_named(name: str) -> ToolFormat:
    """A family by its name (``hermes``, ``qwen3``, ``llama3``, ``mistral``, ``deepseek``,
    ``generic``)."""
    for family in REGISTRY:
        if family.name == name:
            return family()
    raise KeyError(name)


__all__ = ["GENERIC", "HERMES", "REGISTRY", "ToolFormat", "detect_format", "format_named"]
