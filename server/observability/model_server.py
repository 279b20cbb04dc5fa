"""The model-server protocol metrics an inference router reads to pick a replica.

Kubernetes' Gateway API Inference Extension (its endpoint picker) and llm-d's router score each
replica by its queued and running requests, its KV-cache utilisation and, for prefix-aware
routing, its cache geometry and LoRA adapters ("Model Server Protocol", proposal 003). ggserve
publishes them under its own names, and with ``GGSERVE_METRICS_VLLM_NAMES`` also under vLLM's,
so an unmodified router configured for vLLM pods picks ggserve pods too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from server.engine.types import EngineStats

# ggserve reuses any prompt prefix, token by token; routers hash prompts in blocks. This is the
# block the published geometry counts in (the EPP's prefix plugin default is 64 too).
BLOCK_SIZE = 64


@dataclass(frozen=True)
class ServedInfo:
    """What the router should know of the model being served."""

    model: str
    adapters: tuple[str, ...] = ()  # LoRA adapters applied, by name


class ModelServerCollector(Collector):
    """Queue, running, KV utilisation, cache geometry and adapters, read at scrape time."""

    def __init__(
        self,
        stats: Callable[[], EngineStats | None],
        served: Callable[[], ServedInfo],
        *,
        vllm_names: bool,
    ) -> None:
        self._stats = stats
        self._served = served
        self._vllm_names = vllm_names

    def collect(self) -> Iterable[GaugeMetricFamily]:
        stats = self._stats()
        if stats is None:  # no model loaded: nothing a router could use
            return
        served = self._served()
        usage = stats.kv_cells_used / stats.kv_cells_total if stats.kv_cells_total else 0.0
        blocks = str(stats.kv_cells_total // BLOCK_SIZE)
        adapters = ",".join(served.adapters)
        yield _gauge("ggserve_requests_waiting", "Requests queued for a slot.", stats.queue_depth)
        yield _gauge("ggserve_requests_running", "Sequences holding a slot.", stats.slots_active)
        yield _gauge(
            "ggserve_kv_cache_usage_ratio",
            "KV cells held by running sequences, of all slots' cells (0-1).",
            usage,
        )
        config = GaugeMetricFamily(
            "ggserve_kv_cache_config_info",
            "KV cache geometry for prefix-aware routers (value 1).",
            labels=["block_size", "num_blocks", "slots"],
        )
        config.add_metric([str(BLOCK_SIZE), blocks, str(stats.slots_total)], 1)
        yield config
        if not self._vllm_names:
            return
        model = [served.model]
        for name, help_text, value in (
            ("vllm:num_requests_waiting", "Requests waiting (ggserve queue).", stats.queue_depth),
            ("vllm:num_requests_running", "Requests running (ggserve slots).", stats.slots_active),
            ("vllm:kv_cache_usage_perc", "KV-cache usage, 1 = 100%.", usage),
            ("vllm:gpu_cache_usage_perc", "KV-cache usage, 1 = 100% (older name).", usage),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["model_name"])
            family.add_metric(model, value)
            yield family
        cache = GaugeMetricFamily(
            "vllm:cache_config_info",
            "KV cache geometry (value 1).",
            labels=["block_size", "num_gpu_blocks"],
        )
        cache.add_metric([str(BLOCK_SIZE), blocks], 1)
        yield cache
        lora = GaugeMetricFamily(
            "vllm:lora_requests_info",
            "LoRA adapters loaded; the value is when this was read (unix time).",
            labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"],
        )
        lora.add_metric([str(len(served.adapters)), adapters, ""], time.time())
        yield lora


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text)
    family.add_metric([], value)
    return family
