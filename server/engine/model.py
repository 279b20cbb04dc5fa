"""Loading a GGUF model into one multi-sequence llama.cpp context, and the model's vocabulary.

Everything that can go wrong while loading becomes a ``ModelLoadError`` whose message names the
file and what to do; llama.cpp returns NULL on failure (it never aborts the process for a bad
file), and the reason it logged is appended to the message.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import psutil

from server.engine import llama_log
from server.engine.boundary import check_text, check_token_id, check_token_ids
from server.engine.config import EngineConfig
from server.engine.threads import resolve_threads
from server.engine.types import ModelLoadError

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_KV_TYPES = {
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
}


@dataclass(frozen=True)
class ModelInfo:
    """What ``/v1/models`` and ``/ready`` report about the loaded model."""

    file_name: str
    path: str
    size_bytes: int  # size of the file on disk
    architecture: str
    description: str  # llama.cpp's one-liner, e.g. "llama 256M Q4_1"
    name: str  # general.name from the GGUF metadata
    n_params: int
    n_ctx_train: int
    n_vocab: int
    chat_template: str | None
    lora_path: str | None
    metadata: dict[str, str]


def llama_cpp_version() -> str:
    """The version of the llama-cpp-python (and so llama.cpp) this process runs."""
    return str(getattr(llama_cpp, "__version__", "unknown"))


def check_gguf_file(path: Path, what: str = "Model") -> None:
    """Raise ``ModelLoadError`` unless ``path`` is a readable file starting with the GGUF magic."""
    if not path.exists():
        raise ModelLoadError(
            f"{what} file not found: {path}. Check the path (GGSERVE_MODEL_PATH / "
            "GGSERVE_LORA_PATH), or run 'ggserve models fetch' for the default model."
        )
    if path.is_dir():
        raise ModelLoadError(f"{what} path {path} is a directory; point it at a .gguf file.")
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise ModelLoadError(f"{what} file {path} cannot be read: {exc.strerror}.") from exc
    if head != GGUF_MAGIC:
        raise ModelLoadError(
            f"{what} file {path} is not a GGUF file (it starts with {head!r}, GGUF files start "
            "with b'GGUF'). Convert it with 'ggserve convert' or download a .gguf file."
        )


def _llama_reason() -> str:
    problems = llama_log.recent_problems()
    return f" llama.cpp said: {' | '.join(problems[-3:])}" if problems else ""


class LoadedModel:
    """The llama.cpp model, its vocabulary and the one context shared by all slots.

    Only the engine's loop thread may call ``llama_decode`` on ``ctx``; the vocabulary helpers
    (tokenize, token_to_piece) only read the model and are safe from any thread.
    """

    def __init__(self, config: EngineConfig) -> None:
        config.validate()
        llama_log.install()
        llama_cpp.llama_backend_init()
        self.config = config
        self.path = Path(config.model_path)
        check_gguf_file(self.path)
        if config.lora_path is not None:
            check_gguf_file(Path(config.lora_path), what="LoRA adapter")
        self._check_memory()
        self.model = self._load_model()
        try:
            self.vocab = llama_cpp.llama_model_get_vocab(self.model)
            self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
            self.ctx = self._create_context()
        except BaseException:
            llama_cpp.llama_model_free(self.model)
            raise
        self.lora: Any = None  # llama_adapter_lora pointer
        if config.lora_path is not None:
            try:
                self._apply_lora(Path(config.lora_path), config.lora_scale)
            except BaseException:
                self.close()
                raise
        n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self.model))
        if config.n_ctx > n_ctx_train:
            logger.warning(
                "n_ctx per slot (%d) exceeds the %d tokens %s was trained on; expect poor output "
                "past that length",
                config.n_ctx,
                n_ctx_train,
                self.path.name,
            )
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_ctx_per_slot = int(llama_cpp.llama_n_ctx_seq(self.ctx))
        self.n_batch = int(llama_cpp.llama_n_batch(self.ctx))

    # --- loading -----------------------------------------------------------------------------

    def _check_memory(self) -> None:
        size = self.path.stat().st_size
        available = psutil.virtual_memory().available
        if size > available:
            raise ModelLoadError(
                f"Not enough memory to load {self.path}: the file is {size / 2**30:.1f} GiB and "
                f"only {available / 2**30:.1f} GiB RAM is free. Use a smaller quantization "
                "(e.g. Q4_K_M) or free memory."
            )

    def _load_model(self) -> int:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = self.config.n_gpu_layers
        params.load_mode = (
            llama_cpp.LLAMA_LOAD_MODE_MMAP
            if self.config.use_mmap
            else llama_cpp.LLAMA_LOAD_MODE_NONE
        )
        llama_log.clear_problems()
        model = llama_cpp.llama_model_load_from_file(str(self.path).encode("utf-8"), params)
        if not model:
            reason = _llama_reason()
            hint = (
                " It ran out of memory: use a smaller quantization or lower n_gpu_layers."
                if "alloc" in reason.lower()
                else " The file is corrupt or truncated, or its architecture is not supported by "
                "this llama.cpp build: re-download or re-convert it."
            )
            raise ModelLoadError(f"llama.cpp could not load the model {self.path}.{hint}{reason}")
        return int(model)

    def _create_context(self) -> int:
        config = self.config
        n_threads, n_threads_batch = resolve_threads(config.n_threads, config.n_threads_batch)
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = config.n_slots
        params.n_ctx = config.n_ctx * config.n_slots
        params.n_batch = config.n_batch
        params.n_ubatch = min(config.n_ubatch, config.n_batch)
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch
        # One KV stream per sequence: attention for a sequence only ever sees its own cells, so
        # its output does not depend on what else is in the batch (see docs/engine.md).
        params.kv_unified = False
        params.no_perf = True
        flash_attn = config.flash_attn
        if config.kv_cache_type != "f16" and not flash_attn:
            # llama.cpp can quantize the V cache only inside the flash-attention kernel.
            logger.warning(
                "kv_cache_type=%s needs flash attention; enabling it", config.kv_cache_type
            )
            flash_attn = True
        params.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.type_k = _KV_TYPES[config.kv_cache_type]
        params.type_v = _KV_TYPES[config.kv_cache_type]
        llama_log.clear_problems()
        ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not ctx:
            raise ModelLoadError(
                f"llama.cpp could not create a context for {self.path} with {config.n_slots} "
                f"slots x {config.n_ctx} tokens (kv cache {config.kv_cache_type}). Lower "
                f"GGSERVE_N_CTX or GGSERVE_N_SLOTS, or use kv_cache_type q8_0.{_llama_reason()}"
            )
        return int(ctx)

    def _apply_lora(self, path: Path, scale: float) -> None:
        adapter = self.load_adapter(path)
        self._base_adapters = ((adapter, scale),)
        try:
            self.set_adapters(())
        except ModelLoadError:
            llama_cpp.llama_adapter_lora_free(adapter)
            raise
        self.lora = adapter

    def load_adapter(self, path: Path) -> Any:
        """Load a GGUF LoRA made for this model (not applied yet); ``ModelLoadError`` naming
        the file otherwise."""
        check_gguf_file(path, what="LoRA adapter")
        llama_log.clear_problems()
        adapter = llama_cpp.llama_adapter_lora_init(self.model, str(path).encode("utf-8"))
        if not adapter:
            raise ModelLoadError(
                f"llama.cpp could not load the LoRA adapter {path}: it must be a GGUF LoRA made "
                f"for this base model ({self.path.name}); convert it with 'ggserve convert'."
                f"{_llama_reason()}"
            )
        return adapter

    def free_adapter(self, adapter: Any) -> None:
        """Free an adapter from ``load_adapter`` (before the model itself is freed)."""
        llama_cpp.llama_adapter_lora_free(adapter)

    def set_adapters(self, extra: Sequence[tuple[Any, float]]) -> None:
        """Apply the load-time adapter (if any) plus ``extra`` (adapter, scale) pairs to the
        whole context, for the next decodes; llama.cpp skips the work when nothing changed."""
        pairs = [*getattr(self, "_base_adapters", ()), *extra]
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * max(len(pairs), 1))(
            *(a for a, _ in pairs)
        )
        scales = (ctypes.c_float * max(len(pairs), 1))(*(s for _, s in pairs))
        if llama_cpp.llama_set_adapters_lora(self.ctx, adapters, len(pairs), scales) != 0:
            raise ModelLoadError("llama.cpp could not apply the LoRA adapters.")

    def close(self) -> None:
        """Free the context, the adapter and the model (idempotent)."""
        if getattr(self, "ctx", None):
            llama_cpp.llama_free(self.ctx)
            self.ctx = 0
        if getattr(self, "lora", None):
            llama_cpp.llama_adapter_lora_free(self.lora)
            self.lora = None
        if getattr(self, "model", None):
            llama_cpp.llama_model_free(self.model)
            self.model = 0

    # --- vocabulary --------------------------------------------------------------------------

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Text → token ids. ``parse_special`` turns ``<|im_start|>`` into its control token."""
        check_text(text)
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(
            self.vocab, data, len(data), tokens, capacity, add_special, parse_special
        )
        if n < 0:  # cannot happen with len+8, but the API allows it: retry with the exact size
            capacity = -n
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), tokens, capacity, add_special, parse_special
            )
        return list(tokens[:n])

    def token_to_piece(self, token: int, *, special: bool = False) -> bytes:
        """The raw bytes of one token (possibly part of a UTF-8 character); control tokens → b''
        unless ``special`` (then their text, e.g. ``<|im_end|>``)."""
        check_token_id(token, self.n_vocab)
        buffer = ctypes.create_string_buffer(64)  # per call: tokenizing threads never share it
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, special)
        return buffer.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        """Token ids → text, invalid UTF-8 replaced."""
        check_token_ids(tokens, self.n_vocab)
        return b"".join(self.token_to_piece(t) for t in tokens).decode("utf-8", errors="replace")

    @property
    def is_recurrent(self) -> bool:
        """Whether the model keeps a recurrent state (Mamba, RWKV, hybrids), whose sequences
        cannot drop a tail of positions."""
        model = self.model
        return bool(
            llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model)
        )

    def is_eog(self, token: int) -> bool:
        """End-of-generation token (EOS, EOT, <|im_end|> …)."""
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int | None) -> str:
        """The literal text of a (special) token, '' if there is none."""
        if token is None or token < 0 or token >= self.n_vocab:
            return ""
        raw = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def control_token_texts(self) -> tuple[str, ...]:
        """The texts that ``parse_special`` turns into control tokens (``<|im_start|>`` …),
        longest first; one pass over the vocabulary, at load."""
        texts = {
            self.token_text(token)
            for token in range(self.n_vocab)
            if int(llama_cpp.llama_vocab_get_attr(self.vocab, token))
            & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN)
        }
        return tuple(sorted((t for t in texts if t), key=lambda t: (-len(t), t)))

    @property
    def bos_token(self) -> int | None:
        token = int(llama_cpp.llama_vocab_bos(self.vocab))
        return token if token >= 0 else None

    @property
    def eos_token(self) -> int | None:
        token = int(llama_cpp.llama_vocab_eos(self.vocab))
        return token if token >= 0 else None

    # --- metadata ----------------------------------------------------------------------------

    def metadata(self) -> dict[str, str]:
        """All GGUF key/values llama.cpp exposes as strings (arrays are summarized)."""
        result: dict[str, str] = {}
        buffer = ctypes.create_string_buffer(1024)
        for i in range(llama_cpp.llama_model_meta_count(self.model)):
            n = llama_cpp.llama_model_meta_key_by_index(self.model, i, buffer, len(buffer))
            key = buffer.raw[: max(n, 0)].decode("utf-8", errors="replace")
            n = llama_cpp.llama_model_meta_val_str_by_index(self.model, i, buffer, len(buffer))
            if n >= len(buffer):
                big = ctypes.create_string_buffer(n + 1)
                llama_cpp.llama_model_meta_val_str_by_index(self.model, i, big, len(big))
                value = big.raw[:n]
            else:
                value = buffer.raw[: max(n, 0)]
            result[key] = value.decode("utf-8", errors="replace")
        return result

    def chat_template(self) -> str | None:
        """The GGUF's ``tokenizer.chat_template``, or None when the file has none."""
        raw = llama_cpp.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def info(self) -> ModelInfo:
        """Describe the loaded model for ``/v1/models`` and logs."""
        meta = self.metadata()
        buffer = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_model_desc(self.model, buffer, len(buffer))
        return ModelInfo(
            file_name=self.path.name,
            path=str(self.path),
            size_bytes=self.path.stat().st_size,
            architecture=meta.get("general.architecture", "unknown"),
            description=buffer.raw[: max(n, 0)].decode("utf-8", errors="replace"),
            name=meta.get("general.name", self.path.stem),
            n_params=int(llama_cpp.llama_model_n_params(self.model)),
            n_ctx_train=int(llama_cpp.llama_model_n_ctx_train(self.model)),
            n_vocab=self.n_vocab,
            chat_template=self.chat_template(),
            lora_path=str(self.config.lora_path) if self.config.lora_path else None,
            metadata=meta,
        )
