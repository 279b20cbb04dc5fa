"""Prometheus metrics, on a registry owned by the app (no module-level globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from server.engine.types import EngineStats, HistogramSnapshot
from server.observability.genai import GenAIMetrics
from server.observability.resources import rss_mb, vram_mb

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
TOKENS_PER_S_BUCKETS = (1, 5, 10, 20, 40, 80, 160, 320, 640)


class KeyLabeledCounter:
    """A counter whose ``key_id`` label is published as an opaque per-key label, never the id
    itself (docs/security.md, "/metrics"): whoever reads /metrics learns load per tenant,
    not which tenants there are."""

    def __init__(self, counter: Counter, key_label: Callable[[str], str]) -> None:
        self._counter = counter
        self._key_label = key_label

    def labels(self, **labels: str) -> Counter:
        if "key_id" in labels:
            labels["key_id"] = self._key_label(labels["key_id"])
        return self._counter.labels(**labels)


class _LiveCollector(Collector):
    """Values read at scrape time: engine queue/slots, load state, memory."""

    def __init__(
        self, stats: Callable[[], EngineStats | None], load_state: Callable[[], str]
    ) -> None:
        self._stats = stats
        self._load_state = load_state

    def collect(
        self,
    ) -> Iterable[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        stats = self._stats()
        queue = GaugeMetricFamily("ggserve_queue_depth", "Requests waiting for a slot.")
        active = GaugeMetricFamily("ggserve_slots_active", "Slots generating now.")
        total = GaugeMetricFamily("ggserve_slots_total", "Slots (parallel sequences).")
        if stats is not None:
            queue.add_metric([], stats.queue_depth)
            active.add_metric([], stats.slots_active)
            total.add_metric([], stats.slots_total)
        ram_bytes = GaugeMetricFamily(
            "ggserve_prompt_cache_bytes", "Host RAM held by saved slot states (prompt cache)."
        )
        ram_entries = GaugeMetricFamily(
            "ggserve_prompt_cache_entries", "Saved slot states in the RAM prompt cache."
        )
        if stats is not None:
            ram_bytes.add_metric([], stats.prompt_cache_bytes)
            ram_entries.add_metric([], stats.prompt_cache_entries)
        yield from (queue, active, total, ram_bytes, ram_entries)
        if stats is not None:
            for name, help_text, value in (
                (
                    "engine_tokens_generated",
                    "Tokens sampled by the engine.",
                    stats.tokens_generated_total,
                ),
                (
                    "engine_prompt_tokens_evaluated",
                    "Prompt tokens run through the model.",
                    stats.prompt_tokens_evaluated_total,
                ),
                (
                    "engine_prompt_tokens_cached",
                    "Prompt tokens reused from the KV cache.",
                    stats.prompt_tokens_cached_total,
                ),
                ("engine_decode_steps", "llama_decode calls.", stats.decode_steps_total),
                (
                    "engine_graph_passes",
                    "Micro-batches (passes over the weights) of the decode calls.",
                    stats.graph_passes_total,
                ),
                (
                    "engine_busy_seconds",
                    "Engine-thread time in steps (planning, KV edits, decode, sampling, delivery).",
                    stats.engine_busy_seconds_total,
                ),
                (
                    "engine_decode_seconds",
                    "Of the busy time, in the decode call (batch fill and llama_decode).",
                    stats.engine_decode_seconds_total,
                ),
                (
                    "engine_idle_seconds",
                    "Engine-thread time waiting for work.",
                    stats.engine_idle_seconds_total,
                ),
                (
                    "engine_requests_rejected",
                    "Requests refused because the queue was full.",
                    stats.requests_rejected_total,
                ),
                (
                    "prefix_cache_hits",
                    "Prompts (per choice) that reused at least one token from a KV cache.",
                    stats.prefix_cache_hits_total,
                ),
                (
                    "prefix_cache_misses",
                    "Prompts (per choice) evaluated from the first token.",
                    stats.prefix_cache_misses_total,
                ),
                (
                    "prefix_cache_tokens_saved",
                    "Prompt tokens not evaluated thanks to a cached or copied prefix.",
                    stats.prefix_cache_tokens_saved_total,
                ),
                (
                    "prefix_cache_copies",
                    "Prompt prefixes copied from another slot (busy or idle).",
                    stats.prefix_copies_total,
                ),
                (
                    "prefix_cache_copied_tokens",
                    "Prompt tokens provided by cross-slot copies.",
                    stats.prefix_copy_tokens_total,
                ),
                (
                    "prompt_cache_hits",
                    "Admissions that restored a saved state from RAM instead of prefilling it.",
                    stats.prompt_cache_hits_total,
                ),
                (
                    "prompt_cache_misses",
                    "Admissions that restored nothing from RAM (the RAM tier on).",
                    stats.prompt_cache_misses_total,
                ),
                (
                    "prompt_cache_restore_failures",
                    "Saved states llama.cpp refused; those prompts were prefilled instead.",
                    stats.prompt_cache_restore_failures_total,
                ),
                (
                    "prompt_cache_restored_tokens",
                    "Prompt tokens restored from RAM.",
                    stats.prompt_cache_restored_tokens_total,
                ),
                (
                    "prompt_cache_restore_seconds",
                    "Time spent writing saved states back into slots.",
                    stats.prompt_cache_restore_seconds_total,
                ),
                (
                    "prompt_cache_saves",
                    "Evicted slot states saved to RAM.",
                    stats.prompt_cache_saves_total,
                ),
                (
                    "prompt_cache_evictions",
                    "Saved states dropped to stay within GGSERVE_PROMPT_CACHE_MB.",
                    stats.prompt_cache_evictions_total,
                ),
                (
                    "speculative_draft_tokens",
                    "Tokens drafted by prompt lookup and verified by the model.",
                    stats.speculative_draft_tokens_total,
                ),
                (
                    "speculative_accepted_tokens",
                    "Drafted tokens the model agreed with (each saved a decode step).",
                    stats.speculative_accepted_tokens_total,
                ),
                (
                    "engine_adapter_switches",
                    "Decode steps that changed the applied LoRA adapter set (adapters take turns).",
                    stats.adapter_switches_total,
                ),
            ):
                counter = CounterMetricFamily("ggserve_" + name, help_text)
                counter.add_metric([], value)
                yield counter
            for name, help_text, snapshot in (
                (
                    "engine_ttft_seconds",
                    "Submission to first token, per choice, measured in the engine.",
                    stats.ttft_seconds,
                ),
                (
                    "engine_inter_token_seconds",
                    "Time between consecutive tokens of a choice, measured in the engine.",
                    stats.inter_token_seconds,
                ),
            ):
                if snapshot is not None:
                    yield _histogram("ggserve_" + name, help_text, snapshot)
        state = GaugeMetricFamily(
            "ggserve_model_load_state", "1 for the current model load state.", labels=["state"]
        )
        current = self._load_state()
        for name in ("loading", "ready", "failed"):
            state.add_metric([name], 1.0 if name == current else 0.0)
        yield state
        rss = GaugeMetricFamily("ggserve_process_rss_bytes", "Resident memory of the server.")
        rss.add_metric([], rss_mb() * 1024 * 1024)
        yield rss
        vram = vram_mb()
        if vram is not None:
            gpu = GaugeMetricFamily("ggserve_vram_used_bytes", "GPU 0 memory in use.")
            gpu.add_metric([], vram * 1024 * 1024)
            yield gpu


def _histogram(name: str, help_text: str, snapshot: HistogramSnapshot) -> HistogramMetricFamily:
    """A Prometheus histogram (cumulative buckets) from the engine's per-bucket counts."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*snapshot.bounds, float("inf")), snapshot.counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    family = HistogramMetricFamily(name, help_text)
    family.add_metric([], buckets, snapshot.total)
    return family


class Metrics:
    """All ggserve metrics; one instance per app."""

    def __init__(
        self,
        stats: Callable[[], EngineStats | None],
        load_state: Callable[[], str],
        key_label: Callable[[str], str],
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = KeyLabeledCounter(
            Counter(
                "ggserve_requests", "HTTP requests.", ["route", "status", "key_id"], registry=r
            ),
            key_label,
        )
        self.latency = Histogram(
            "ggserve_request_latency_seconds",
            "Request latency.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "ggserve_ttft_seconds",
            "Time to first token.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "ggserve_queue_wait_seconds",
            "Time waiting for a slot.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = KeyLabeledCounter(
            Counter("ggserve_prompt_tokens", "Prompt tokens received.", ["key_id"], registry=r),
            key_label,
        )
        self.cached_prompt_tokens = Counter(
            "ggserve_prompt_tokens_cached", "Prompt tokens reused from the KV cache.", registry=r
        )
        self.completion_tokens = KeyLabeledCounter(
            Counter("ggserve_completion_tokens", "Tokens generated.", ["key_id"], registry=r),
            key_label,
        )
        self.tokens_per_s = Histogram(
            "ggserve_decode_tokens_per_second",
            "Per-request decode speed.",
            buckets=TOKENS_PER_S_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("ggserve_requests_in_flight", "Requests being served.", registry=r)
        self.finished = Counter(
            "ggserve_generations", "Generations by finish reason.", ["finish_reason"], registry=r
        )
        self.rate_limited = KeyLabeledCounter(
            Counter(
                "ggserve_rate_limited",
                "Requests refused by rate limits.",
                ["key_id", "limit"],
                registry=r,
            ),
            key_label,
        )
        self.model_info = Gauge(
            "ggserve_model_info",
            "The model version new requests go to (value 1).",
            ["model", "version"],
            registry=r,
        )
        self.model_requests = Counter(
            "ggserve_model_requests", "Requests served, by model version.", ["version"], registry=r
        )
        self.model_activations = Counter(
            "ggserve_model_activations",
            "Hot swaps through POST /admin/models/activate, by result.",
            ["result"],
            registry=r,
        )
        self.rate_limit_storage_errors = Counter(
            "ggserve_rate_limit_storage_errors",
            "Rate-limit storage (Redis) failures; each call was decided by the in-memory fallback.",
            registry=r,
        )
        self.auth_failures_refused = Counter(
            "ggserve_auth_failures_refused",
            "Requests refused (429) because their address sent too many invalid keys.",
            registry=r,
        )
        self.capture_records = Counter(
            "ggserve_capture_records",
            "Captured responses by outcome: written, duplicate (id reused), dropped (queue "
            "full), failed (disk full or read-only), purged (past retention).",
            ["outcome"],
            registry=r,
        )
        self.feedback = Counter(
            "ggserve_feedback",
            "Feedback received, by rating: up/down (thumbs) or 1star..5star.",
            ["rating"],
            registry=r,
        )
        self.rollout_requests = Counter(
            "ggserve_rollout_requests",
            "Requests of a champion/challenger rollout, by variant and outcome (ok/error).",
            ["variant", "outcome"],
            registry=r,
        )
        self.rollout_ratings = Counter(
            "ggserve_rollout_ratings",
            "First ratings of rollout responses, by variant and rating (up/down).",
            ["variant", "rating"],
            registry=r,
        )
        self.rollout_decisions = Counter(
            "ggserve_rollout_decisions",
            "Rollouts ended, by status: promoted, rolled_back, undecided, stopped.",
            ["status"],
            registry=r,
        )
        self.rollout_share = Gauge(
            "ggserve_rollout_challenger_share",
            "Share of traffic sent to the running rollout's challenger (0: none running).",
            registry=r,
        )
        for status in ("promoted", "rolled_back", "undecided", "stopped"):
            self.rollout_decisions.labels(status=status)
        for outcome in ("written", "duplicate", "dropped", "failed", "purged"):
            self.capture_records.labels(outcome=outcome)  # exported as 0 from the start
        for rating in ("up", "down", "1star", "2star", "3star", "4star", "5star"):
            self.feedback.labels(rating=rating)
        self.genai = GenAIMetrics(r)  # OpenTelemetry GenAI server histograms (gen_ai_server_*)
        r.register(_LiveCollector(stats, load_state))

    def serving(self, model: str, version: str) -> None:
        """Point ``ggserve_model_info`` at the model now serving new requests."""
        self.model_info.clear()
        self.model_info.labels(model=model, version=version).set(1)
