"""The GenAI mapping: a generation becomes the span and metrics OpenTelemetry's conventions name."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from server.observability.genai import (
    GenAICall,
    GenAIMetrics,
    operation_name,
    time_per_output_token,
)


def _call(**overrides: object) -> GenAICall:
    fields: dict[str, object] = {
        "operation": "chat",
        "request_model": "smollm2-135m",
        "response_model": "smollm2-135m",
        "model_version": "v3",
        "response_id": "chatcmpl-1",
        "finish_reasons": ("stop",),
        "input_tokens": 12,
        "output_tokens": 5,
    }
    return GenAICall(**{**fields, **overrides})  # type: ignore[arg-type]


def test_routes_map_to_the_conventions_operation_names() -> None:
    assert operation_name("/v1/chat/completions") == "chat"
    assert operation_name("/v1/completions") == "text_completion"
    assert operation_name("/v1/ask") == "chat"  # messages through the chat template
    assert operation_name("/v1/responses") == "chat"


def test_span_is_named_operation_then_model() -> None:
    assert _call().span_name == "chat smollm2-135m"
    assert _call(operation="text_completion").span_name == "text_completion smollm2-135m"


def test_attributes_use_the_current_provider_key_and_not_the_deprecated_one() -> None:
    attributes = _call().attributes()
    assert attributes["gen_ai.provider.name"] == "ggserve"
    assert "gen_ai.system" not in attributes


def test_attributes_carry_usage_model_version_and_finish_reasons_as_a_list() -> None:
    attributes = _call(finish_reasons=("stop", "length"), choice_count=2).attributes()
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert attributes["gen_ai.usage.output_tokens"] == 5
    assert attributes["gen_ai.response.finish_reasons"] == ("stop", "length")
    assert attributes["gen_ai.response.id"] == "chatcmpl-1"
    assert attributes["ggserve.model.version"] == "v3"
    assert attributes["gen_ai.request.choice.count"] == 2


def test_unknown_optional_attributes_are_left_out_not_sent_empty() -> None:
    attributes = _call(response_id=None).attributes()
    for key in (
        "gen_ai.response.id",
        "gen_ai.request.max_tokens",
        "gen_ai.request.temperature",
        "gen_ai.request.seed",
        "gen_ai.request.choice.count",  # the default of 1 is implied
        "gen_ai.usage.cache_read.input_tokens",
        "ggserve.rollout.variant",
    ):
        assert key not in attributes, key


def test_sampling_settings_and_variant_appear_when_set_including_a_zero_temperature() -> None:
    attributes = _call(max_tokens=64, temperature=0.0, top_p=0.9, variant="challenger").attributes()
    assert attributes["gen_ai.request.max_tokens"] == 64
    assert attributes["gen_ai.request.temperature"] == 0.0  # greedy is a value, not "unset"
    assert attributes["gen_ai.request.top_p"] == 0.9
    assert attributes["ggserve.rollout.variant"] == "challenger"


def test_metric_labels_hold_no_per_request_values() -> None:
    labels = _call().metric_labels()
    assert labels == {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "ggserve",
        "gen_ai_request_model": "smollm2-135m",
        "gen_ai_response_model": "smollm2-135m",
        "ggserve_model_version": "v3",
    }


@pytest.mark.parametrize(
    ("tokens", "decode_ms", "expected"),
    [(11, 100.0, 0.01), (2, 30.0, 0.03), (1, 50.0, None), (0, 0.0, None), (5, 0.0, None)],
)
def test_time_per_output_token_counts_only_tokens_after_the_first(
    tokens: int, decode_ms: float, expected: float | None
) -> None:
    assert time_per_output_token(tokens, decode_ms) == (
        None if expected is None else pytest.approx(expected)
    )


def test_histograms_have_the_prometheus_translated_names_and_seconds() -> None:
    registry = CollectorRegistry()
    metrics = GenAIMetrics(registry)
    metrics.observe(_call(), duration_s=0.3, ttft_s=0.05, tpot_s=0.02)
    metrics.observe(_call(), duration_s=0.001, ttft_s=None, tpot_s=None)  # refused: no tokens
    text = generate_latest(registry).decode()
    labels = (
        'gen_ai_operation_name="chat",gen_ai_provider_name="ggserve",'
        'gen_ai_request_model="smollm2-135m",gen_ai_response_model="smollm2-135m",'
        'ggserve_model_version="v3"'
    )
    assert f"gen_ai_server_request_duration_seconds_count{{{labels}}} 2.0" in text
    assert f"gen_ai_server_time_to_first_token_seconds_count{{{labels}}} 1.0" in text
    assert f"gen_ai_server_time_per_output_token_seconds_count{{{labels}}} 1.0" in text
    # The spec's bucket boundaries: 0.05 s falls in the 0.06 bucket, not the 0.04 one.
    assert f'gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le="0.04"}} 0.0' in text
    assert f'gen_ai_server_time_to_first_token_seconds_bucket{{{labels},le="0.06"}} 1.0' in text
