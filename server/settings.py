"""The single source of configuration: environment variables prefixed ``GGSERVE_`` and ``.env``.

Every field here is documented in ``.env.example``; ``tests/unit/test_settings.py`` checks that
the two never drift apart.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.engine.config import KVCacheType, check_batch_holds_slots
from server.feedback.records import CaptureLevel

LogFormat = Literal["json", "text"]


def parse_adapters(text: str) -> tuple[tuple[str, Path, float], ...]:
    """``name=path[:scale],…`` → (name, path, scale) tuples; ``ValueError`` naming the entry."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, rest = (part.strip() for part in item.partition("="))
        path, scale = rest, 1.0
        head, colon, tail = rest.rpartition(":")
        if colon:
            try:
                path, scale = head, float(tail)
            except ValueError:
                path = rest  # a colon in the path itself
        if not sep or not name or not path or not 0.0 <= scale <= 4.0:
            raise ValueError(
                f"GGSERVE_LORA_ADAPTERS entry {item!r} is not name=path[:scale] (scale 0-4)"
            )
        out.append((name, Path(path), scale))
    if len({name for name, _, _ in out}) != len(out):
        raise ValueError("GGSERVE_LORA_ADAPTERS names must be distinct")
    return tuple(out)


NoContextPolicy = Literal["refuse", "answer"]


def _split_csv(value: object) -> object:
    """Accept ``a,b,c`` from the environment as well as a JSON list."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            import json

            return json.loads(stripped)
        return [part.strip() for part in stripped.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]

_OBJECTIVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_OBJECTIVE_VALUE = re.compile(r"[+-]?[0-9]{1,11}")


def parse_objectives(text: str) -> dict[str, int]:
    """``critical=-10,standard=0`` → ``{"critical": -10, "standard": 0}``; ValueError names
    the bad entry."""
    objectives: dict[str, int] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, sep, value = (s.strip() for s in entry.partition("="))
        if not sep or not _OBJECTIVE_NAME.fullmatch(name) or not _OBJECTIVE_VALUE.fullmatch(value):
            raise ValueError(f"objective {entry[:40]!r} must be 'name=integer'")
        if not -(2**31) <= int(value) < 2**31 or name in objectives:
            raise ValueError(f"objective {name!r}: duplicate or outside the 32-bit range")
        objectives[name] = int(value)
    return objectives


def is_loopback_host(host: str) -> bool:
    """Whether a bind address is reachable only from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname or a wildcard: assume other machines reach it


class Settings(BaseSettings):
    """Runtime configuration of the ggserve server."""

    model_config = SettingsConfigDict(
        env_prefix="GGSERVE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # "GGSERVE_X=" as in .env.example means "use the default"
    )

    # --- model -------------------------------------------------------------------------
    model_path: Path = Field(
        Path("models/SmolLM2-135M-Instruct.Q4_1.gguf"), description="GGUF file to serve."
    )
    model_alias: str | None = Field(
        None, description="Name reported by /v1/models; defaults to the manifest name or file stem."
    )
    lora_path: Path | None = Field(
        None, description="GGUF LoRA adapter applied at load time (no merge needed)."
    )
    lora_scale: float = Field(1.0, description="Strength of the runtime LoRA adapter.")
    lora_adapters: str = Field(
        "",
        description="Named GGUF LoRA adapters over the served model, picked per request by "
        "'model': name=path[:scale], comma-separated (e.g. support=adapters/support.gguf:0.8).",
    )

    def adapter_list(self) -> tuple[tuple[str, Path, float], ...]:
        """``lora_adapters`` parsed: (name, path, scale) per adapter."""
        return parse_adapters(self.lora_adapters)

    verify_sha256: bool = Field(
        False, description="Check the model's sha256 against its manifest.json before loading."
    )
    registry_path: Path | None = Field(
        None,
        description="Model registry (JSON); when set, its active version is served and "
        "POST /admin/models/activate swaps versions without a restart.",
    )
    model_mmap: bool = Field(
        False,
        description="mmap the GGUF instead of reading it; a file changed while serving can crash.",
    )

    # --- engine --------------------------------------------------------------------------
    n_slots: int = Field(4, ge=1, le=64, description="Concurrent sequences (llama.cpp n_seq_max).")
    n_ctx: int = Field(2048, ge=128, description="Context tokens per slot.")
    n_batch: int = Field(512, ge=16, description="Max tokens submitted to one llama_decode call.")
    n_ubatch: int = Field(512, ge=16, description="Physical micro-batch size.")
    n_threads: int = Field(
        0,
        ge=0,
        description="Decode threads; 0 = all physical cores (see docs/engine.md, Threads).",
    )
    n_threads_batch: int = Field(0, ge=0, description="Prompt threads; 0 = same as n_threads.")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU; -1 = all.")
    flash_attn: bool = Field(
        True,
        description="Use flash attention where the backend has it (greedy output stays "
        "batch-invariant with it: tests/integration/test_engine.py).",
    )
    kv_cache_type: KVCacheType = Field(
        "f16", description="KV cache element type; q8_0/q4_0 turn flash attention on."
    )
    prompt_cache_mb: int = Field(
        2048,
        ge=0,
        description="Host RAM (MiB) for the KV states of evicted slots, restored when their "
        "conversation returns instead of prefilled again; 0 = off.",
    )
    prompt_cache_dir: Path | None = Field(
        None,
        description="Mirror the RAM prompt cache to files here (0600, one subdirectory per "
        "model file sha256, context, KV type and LoRA), loaded back at start so returning "
        "conversations survive a restart; unset = RAM only.",
    )
    prefix_cache_scope: Literal["key", "global"] = Field(
        "key",
        description="Who may reuse a cached prompt prefix: 'key' (the API key that wrote it; "
        "the server's own system prompts are shared) or 'global' (every client, as one "
        "trusted tenant). Requests narrow it further with cache_salt.",
    )
    speculative: Literal["off", "ngram"] = Field(
        "ngram",
        description="Prompt-lookup speculative decoding: draft tokens from n-grams of the prompt "
        "and the answer so far, verified in the same decode as the other slots; drafts only "
        "where their measured cost pays (docs/engine.md). Requests opt out with "
        '"speculative": false.',
    )
    speculative_max_draft: int = Field(
        8, ge=1, le=64, description="Most tokens one sequence drafts per step."
    )
    max_queue: int = Field(64, ge=0, description="Requests waiting for a slot before 503.")
    min_priority: int = Field(
        0,
        description="The most urgent request priority accepted (lower goes first, as vLLM's "
        "priority); requests may ask for larger values (batch work) freely.",
    )
    inference_objectives: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict,
        description="Named priorities for the x-gateway-inference-objective header, e.g. "
        "'critical=-10,standard=0,sheddable=10'; an integer header value is the priority itself.",
    )
    request_timeout_s: float = Field(300.0, gt=0, description="Wall-clock limit per request.")
    max_tokens_default: int = Field(256, ge=1, description="max_tokens when a request has none.")
    max_tokens_limit: int = Field(2048, ge=1, description="Largest max_tokens accepted.")
    warmup: bool = Field(True, description="Run one short generation before reporting ready.")

    # --- HTTP ----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, ge=0, le=65535, description="Bind port.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body accepted.")
    cors_origins: CsvList = Field(
        default_factory=list, description="Origins allowed by CORS (comma list); empty = none."
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On SIGTERM, seconds in-flight requests get to finish."
    )

    # --- security ------------------------------------------------------------------------
    api_keys: CsvList = Field(
        default_factory=list,
        description="API key hashes, comma list of 'id:sha256hex' or 'id:name:sha256hex', "
        "optionally ending ':priority=N' (the key's default request priority).",
    )
    api_keys_file: Path | None = Field(
        None, description="File with one 'id[:name]:sha256hex[:priority=N]' line per key."
    )
    api_key: SecretStr | None = Field(
        None, description="One plaintext key (dev convenience; hashed at start, never logged)."
    )
    auth_disabled: bool = Field(
        False, description="Serve without API keys (only sensible on a private loopback)."
    )
    auth_disabled_allow_network: bool = Field(
        False,
        description="Allow GGSERVE_AUTH_DISABLED with a non-loopback GGSERVE_HOST (refused at "
        "start otherwise).",
    )
    admin_key_ids: CsvList = Field(
        default_factory=list, description="Key ids allowed to call /admin/* endpoints."
    )
    metrics_public: bool | None = Field(
        None,
        description="/metrics without an API key: true or false; unset = only when GGSERVE_HOST "
        "is a loopback address.",
    )
    metrics_vllm_names: bool = Field(
        False,
        description="Also publish the router metrics under vLLM's names (vllm:num_requests_waiting"
        ", vllm:kv_cache_usage_perc, …), so a router configured for vLLM pods picks ggserve.",
    )
    rate_limit_rpm: int = Field(0, ge=0, description="Requests per minute per key; 0 = unlimited.")
    rate_limit_tpm: int = Field(
        0, ge=0, description="Tokens (prompt + generated) per minute per key; 0 = unlimited."
    )
    max_concurrent_per_key: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Requests one key may have in flight (n choices count n, streams until "
        "they end); 429 beyond it; 0 = no cap (one tenant). Set it below the slot count when "
        "several tenants share a server.",
    )
    rate_limit_storage: str = Field(
        "memory://", description="limits storage URI: memory:// or redis://host:port/db."
    )
    guardrails_file: Path | None = Field(
        None, description="Blocked topics/patterns (one regex per line); unset = off."
    )
    auth_failure_limit: int = Field(
        20, ge=0, description="Invalid keys from one address before 429; 0 = unlimited."
    )
    auth_failure_window_s: float = Field(
        60.0, gt=0, description="Window over which invalid keys are counted per address."
    )
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(
        default_factory=list,
        description="Proxy networks (CIDRs) whose X-Forwarded-For names the client; "
        "empty = never read it.",
    )

    # --- retrieval -----------------------------------------------------------------------
    index_path: Path | None = Field(None, description="FAISS index folder built by 'index build'.")
    embedder_path: Path = Field(
        Path("models/all-MiniLM-L6-v2"), description="sentence-transformers model folder."
    )
    embedder_threads: int = Field(
        1,
        ge=0,
        le=1024,
        description="torch threads per embedding call in the server; 0 = one per core. More "
        "than 1 slows every later CPU decode step (llama.cpp shares torch's OpenMP runtime).",
    )
    rag_top_k: int = Field(4, ge=1, le=50, description="Passages retrieved per question.")
    rag_score_threshold: float = Field(
        0.3, description="Cosine similarity a passage needs to be used."
    )
    rag_no_context: NoContextPolicy = Field(
        "refuse", description="No passage passes: 'refuse' (say I don't know) or 'answer'."
    )
    index_watch_s: float = Field(
        0.0, ge=0, description="Poll the index for new versions every N s; 0 = off."
    )
    agent: str | None = Field(None, description="Custom agent class, 'package.module:Class'.")
    system_prompt: str = Field(
        "You are a helpful assistant. Answer concisely.",
        description="System prompt used by /v1/ask.",
    )

    # --- feedback flywheel (docs/flywheel.md) ------------------------------------------
    capture: CaptureLevel = Field(
        "metadata",
        description="One record per response: 'off'; 'metadata' (ids, key id, route, model "
        "version, usage, latency); 'full' (also messages, answer, sources, sampling; redacted).",
    )
    capture_retention_days: float = Field(
        30.0,
        ge=0,
        description="Delete captured responses and their feedback after N days; 0 = keep.",
    )
    capture_queue: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Records waiting for the capture writer; more are dropped.",
    )
    feedback_db: Path = Field(
        Path("data/feedback.db"),
        description="SQLite file (WAL) for captured responses and feedback.",
    )
    ui: bool = Field(True, description="Serve the demo page at /ui.")

    # --- drift ---------------------------------------------------------------------------
    drift_enabled: bool = Field(
        True, description="Compare recent requests with a reference window (see docs)."
    )
    drift_reference_size: int = Field(
        500, ge=10, le=20_000, description="Requests in the frozen reference window."
    )
    drift_window_size: int = Field(
        500, ge=10, le=20_000, description="Most recent requests compared with the reference."
    )
    drift_min_samples: int = Field(
        200, ge=10, description="Requests each window needs before a drift verdict."
    )
    drift_min_feedback: int = Field(
        50, ge=2, description="Ratings each window needs before a feedback verdict."
    )
    drift_interval_s: float = Field(300.0, gt=0, description="Seconds between drift evaluations.")
    drift_permutations: int = Field(
        500, ge=1, le=20_000, description="Permutations of the query-embedding (MMD) test."
    )
    drift_alpha: float = Field(
        0.05, gt=0, lt=1, description="False-alarm rate shared by all drift signals."
    )
    drift_reference_file: Path | None = Field(
        None, description="JSONL of reference questions; unset = the first requests served."
    )
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP collector for request traces (http://host:4318); unset = off."
    )

    # --- logging -------------------------------------------------------------------------
    log_level: str = Field("INFO", description="Log level.")
    log_format: LogFormat = Field("json", description="'json' lines or human 'text'.")
    log_file: Path | None = Field(None, description="Also write logs to this file.")

    @field_validator("cors_origins", "api_keys", "admin_key_ids", "trusted_proxies", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("inference_objectives", mode="before")
    @classmethod
    def _objectives(cls, value: object) -> object:
        return parse_objectives(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _batch_holds_every_slot(self) -> Settings:
        check_batch_holds_slots(self.n_batch, self.n_slots)
        return self

    @model_validator(mode="after")
    def _no_open_server_on_a_network(self) -> Settings:
        """Auth disabled on an address other machines reach serves anyone who finds it: refused
        unless the operator says so in a setting of its own (docs/security.md)."""
        open_on_a_network = self.auth_disabled and not is_loopback_host(self.host)
        if open_on_a_network and not self.auth_disabled_allow_network:
            raise ValueError(
                f"auth_disabled: GGSERVE_AUTH_DISABLED=true with GGSERVE_HOST={self.host} "
                "would serve anyone who can reach that address. Bind 127.0.0.1, configure "
                "API keys, or set GGSERVE_AUTH_DISABLED_ALLOW_NETWORK=true if a network "
                "boundary you control keeps everyone else out."
            )
        return self

    @property
    def metrics_without_key(self) -> bool:
        """Whether /metrics answers without a key: GGSERVE_METRICS_PUBLIC, or when unset, only
        on a loopback bind (off a loopback it lists per-key usage and load to anyone)."""
        if self.metrics_public is not None:
            return self.metrics_public
        return is_loopback_host(self.host)

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("lora_adapters")
    @classmethod
    def _adapters_parse(cls, value: str) -> str:
        parse_adapters(value)  # a bad entry fails at start, naming itself
        return value
