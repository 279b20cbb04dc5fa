"""The model-server protocol metrics a router scores replicas by (Gateway API Inference
Extension / llm-d): ggserve's names always, vLLM's with GGSERVE_METRICS_VLLM_NAMES."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from server.engine.types import EngineStats
from server.observability.model_server import ModelServerCollector, ServedInfo

STATS = EngineStats(
    slots_total=4, slots_active=3, queue_depth=5, kv_cells_used=2048, kv_cells_total=8192
)


def _scrape(*, vllm_names: bool, stats: EngineStats | None = STATS) -> str:
    registry = CollectorRegistry()
    served = ServedInfo("smollm2", ("support-v3",))
    registry.register(ModelServerCollector(lambda: stats, lambda: served, vllm_names=vllm_names))
    return generate_latest(registry).decode()


def test_queue_running_and_kv_usage_under_ggserve_names() -> None:
    text = _scrape(vllm_names=False)
    assert "ggserve_requests_waiting 5.0" in text
    assert "ggserve_requests_running 3.0" in text
    assert "ggserve_kv_cache_usage_ratio 0.25" in text
    assert 'ggserve_kv_cache_config_info{block_size="64",num_blocks="128",slots="4"} 1.0' in text
    assert "vllm:" not in text


def test_vllm_names_carry_the_model_and_the_adapters() -> None:
    text = _scrape(vllm_names=True)
    assert 'vllm:num_requests_waiting{model_name="smollm2"} 5.0' in text
    assert 'vllm:num_requests_running{model_name="smollm2"} 3.0' in text
    assert 'vllm:kv_cache_usage_perc{model_name="smollm2"} 0.25' in text
    assert 'vllm:gpu_cache_usage_perc{model_name="smollm2"} 0.25' in text
    assert 'vllm:cache_config_info{block_size="64",num_gpu_blocks="128"} 1.0' in text
    assert 'max_lora="1",running_lora_adapters="support-v3",waiting_lora_adapters=""' in text


def test_nothing_is_published_before_a_model_is_loaded() -> None:
    assert "ggserve_requests_waiting" not in _scrape(vllm_names=True, stats=None)
