"""Generations in the shape observability tools read: OpenTelemetry's GenAI conventions.

Langfuse, MLflow, Phoenix and any OTLP backend recognise a model call by its ``gen_ai.*``
attributes (semantic conventions for generative AI, status *development*, as of the split into
``open-telemetry/semantic-conventions-genai``): a span named ``{operation} {model}`` carrying
the operation, provider, request and response model, response id, finish reasons, token usage
and the sampling settings; and three server histograms in seconds —
``gen_ai.server.time_to_first_token``, ``gen_ai.server.time_per_output_token`` and
``gen_ai.server.request.duration`` — which Prometheus sees with dots as underscores and the
unit as a suffix (``gen_ai_server_time_to_first_token_seconds``).

The provider is ``gen_ai.provider.name`` (the current spec; ``gen_ai.system`` is its deprecated
predecessor and is not sent). ggserve adds its own model version (and, with a rollout, the
variant) under ``ggserve.*``: the conventions have no attribute for them.

Everything here is pure: the serving layer builds a :class:`GenAICall` once per generation and
hands it to tracing and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram

PROVIDER = "ggserve"  # self-hosted: the server is the provider (vLLM sends "vllm")

# Bucket boundaries the conventions recommend for each server histogram (seconds).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip

# Routes that complete raw text; every other generation route is a chat (/v1/ask included:
# it renders messages through the chat template).
_TEXT_COMPLETION_ROUTES = frozenset({"/v1/completions"})

# The conventions' own metric attributes, as Prometheus labels (dots become underscores).
_METRIC_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "ggserve_model_version",
)

AttributeValue = str | int | float | bool | tuple[str, ...]


def operation_name(route: str) -> str:
    """``gen_ai.operation.name`` of a generation served on ``route``."""
    return "text_completion" if route in _TEXT_COMPLETION_ROUTES else "chat"


def time_per_output_token(output_tokens: int, decode_ms: float) -> float | None:
    """Seconds per token after the first (the spec's definition), or None when fewer than two
    tokens were generated: one token has no inter-token time."""
    if output_tokens < 2 or decode_ms <= 0:
        return None
    return decode_ms / 1000 / (output_tokens - 1)


@dataclass(frozen=True)
class GenAICall:
    """One generation, as the conventions name its parts."""

    operation: str  # "chat" | "text_completion"
    request_model: str
    response_model: str
    model_version: str  # the registry version ("v2"), or "unregistered"
    response_id: str | None
    finish_reasons: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    choice_count: int = 1
    cached_input_tokens: int = 0
    variant: str | None = None  # the rollout arm ("champion" / "challenger"), when one runs

    @property
    def span_name(self) -> str:
        """``{gen_ai.operation.name} {gen_ai.request.model}``, as the span conventions say."""
        return f"{self.operation} {self.request_model}"

    def attributes(self) -> dict[str, AttributeValue]:
        """The span's attributes; optional ones are left out when unknown (never sent empty)."""
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": self.request_model,
            "gen_ai.response.model": self.response_model,
            "gen_ai.response.finish_reasons": self.finish_reasons,
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "ggserve.model.version": self.model_version,
        }
        optional: dict[str, AttributeValue | None] = {
            "gen_ai.response.id": self.response_id,
            "gen_ai.request.max_tokens": self.max_tokens,
            "gen_ai.request.temperature": self.temperature,
            "gen_ai.request.top_p": self.top_p,
            "gen_ai.request.top_k": self.top_k,
            "gen_ai.request.seed": self.seed,
            "gen_ai.request.choice.count": self.choice_count if self.choice_count != 1 else None,
            "gen_ai.usage.cache_read.input_tokens": self.cached_input_tokens or None,
            "ggserve.rollout.variant": self.variant,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        return attributes

    def metric_labels(self) -> dict[str, str]:
        """The metric attributes the conventions list (low cardinality: no ids, no tokens)."""
        values = (
            self.operation,
            PROVIDER,
            self.request_model,
            self.response_model,
            self.model_version,
        )
        return dict(zip(_METRIC_LABELS, values, strict=True))


class GenAIMetrics:
    """The conventions' server histograms, on the app's Prometheus registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token",
            "gen_ai.server.time_to_first_token: time to generate the first token.",
            _METRIC_LABELS,
            unit="seconds",
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            "gen_ai_server_time_per_output_token",
            "gen_ai.server.time_per_output_token: time per output token after the first.",
            _METRIC_LABELS,
            unit="seconds",
            buckets=TPOT_BUCKETS,
            registry=registry,
        )
        self.request_duration = Histogram(
            "gen_ai_server_request_duration",
            "gen_ai.server.request.duration: generation request duration, first byte in to "
            "last token out.",
            _METRIC_LABELS,
            unit="seconds",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def observe(
        self, call: GenAICall, *, duration_s: float, ttft_s: float | None, tpot_s: float | None
    ) -> None:
        """One generation: its duration always; TTFT and TPOT when it generated tokens."""
        labels = call.metric_labels()
        self.request_duration.labels(**labels).observe(duration_s)
        if ttft_s is not None:
            self.time_to_first_token.labels(**labels).observe(ttft_s)
        if tpot_s is not None:
            self.time_per_output_token.labels(**labels).observe(tpot_s)
