"""Tool (function) calling: tool specs, the call grammar, prompt rendering and output parsing.

The wire format of a call is the Hermes/Qwen one most open chat models are trained on::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Nothing here knows HTTP; the OpenAI layer turns requests into ``ToolSpec`` values and parsed
calls back into ``tool_calls``.
"""

from server.chat.tools.spec import ToolCall, ToolChoice, ToolSpec, ToolSpecError

__all__ = ["ToolCall", "ToolChoice", "ToolSpec", "ToolSpecError"]
