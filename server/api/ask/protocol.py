"""/v1/ask: the agent endpoint's request and response, richer than OpenAI's (sources, timings)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# No model this server can load has a larger context; the configured limit is checked too.
MAX_TOKENS_BOUND = 131_072


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    question: str = Field(..., min_length=1, max_length=8000, description="The user's question.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=MAX_TOKENS_BOUND,
        description="Cap on generated tokens (the server's GGSERVE_MAX_TOKENS_LIMIT also applies).",
    )
    temperature: float = Field(0.2, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = Field(False, description="Server-sent events instead of one JSON body.")
    top_k: int | None = Field(None, ge=1, le=50, description="Passages to retrieve (RAG).")


class Source(BaseModel):
    n: int
    document: str
    title: str | None = None
    heading: str | None = None
    score: float
    snippet: str


class AskUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_prompt_tokens: int = 0


class AskTimings(BaseModel):
    queue_ms: float
    ttft_ms: float
    total_ms: float
    tokens_per_s: float | None
    embed_ms: float = 0.0
    search_ms: float = 0.0
    generate_ms: float = 0.0


class AskResponse(BaseModel):
    id: str
    model: str
    answer: str
    finish_reason: str
    grounded: bool = Field(description="True when the answer used retrieved passages.")
    no_context: bool = Field(
        False, description="True when an index is configured but no passage passed the threshold."
    )
    sources: list[Source] = Field(default_factory=list)
    usage: AskUsage
    timings: AskTimings
