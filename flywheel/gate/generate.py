"""One generation through the engine, collected: what the eval runner and the room probe share."""

from __future__ import annotations

from server.engine.types import Engine, FinishEvent, GenerationRequest, TokenEvent


async def token_steps(engine: Engine, request: GenerationRequest, what: str) -> list[TokenEvent]:
    """Every token event of ``request``; RuntimeError naming ``what`` when generation fails."""
    steps: list[TokenEvent] = []
    async for event in engine.generate(request):
        if isinstance(event, TokenEvent):
            steps.append(event)
        elif isinstance(event, FinishEvent) and event.finish_reason == "error":
            raise RuntimeError(f"generation failed {what}: {event.error}")
    return steps
