"""Probe the two ways llama.cpp can share a prompt prefix between sequences, and what each costs.

``kv_unified=False`` (ggserve's choice): one KV stream per sequence. ``llama_memory_seq_cp``
across streams copies the whole stream buffer at the next decode; we measure that cost.
``kv_unified=True``: one stream for all; a copy only tags cells, but attention of every sequence
runs over the shared buffer. We check whether greedy output then still equals the output of
the same prompt decoded alone.

    python -m bench kv_share_probe

Prints one line per measurement; the figures are quoted in docs/engine.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import llama_cpp

from bench.harness.server import ROOT

N_SEQ = 4
N_CTX = 2048


class Context:
    """A bare llama.cpp context with ``N_SEQ`` sequences of ``N_CTX`` tokens."""

    def __init__(self, model: object, unified: bool, threads: int) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = N_SEQ
        params.n_ctx = N_CTX * N_SEQ
        params.n_batch = 512
        params.n_ubatch = 512
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = unified
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def decode(self, items: list[tuple[int, int, int, bool]]) -> float:
        """Decode (token, pos, seq, logits) rows; returns seconds."""
        b = self.batch
        for n, (token, pos, seq, logits) in enumerate(items):
            b.token[n], b.pos[n], b.n_seq_id[n] = token, pos, 1
            b.seq_id[n][0], b.logits[n] = seq, logits
        b.n_tokens = len(items)
        start = time.perf_counter()
        if llama_cpp.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        return time.perf_counter() - start

    def prefill(self, tokens: list[int], seq: int, start: int = 0) -> int:
        """Evaluate ``tokens`` from position ``start`` on ``seq``; returns the argmax after them."""
        for i in range(start, len(tokens), 512):
            chunk = tokens[i : i + 512]
            last = i + len(chunk) == len(tokens)
            self.decode(
                [(t, i + k, seq, last and k == len(chunk) - 1) for k, t in enumerate(chunk)]
            )
        return self.argmax(-1)

    def argmax(self, row: int) -> int:
        logits = llama_cpp.llama_get_logits_ith(self.ctx, row)
        return max(range(self.n_vocab), key=lambda i: logits[i])

    def greedy(self, prompts: dict[int, list[int]], n: int, start: dict[int, int]) -> dict:
        """Greedy-decode every seq in ``prompts`` together, ``n`` tokens each."""
        nxt = {}
        for seq, prompt in prompts.items():
            nxt[seq] = self.prefill(prompt, seq, start.get(seq, 0))
        out: dict[int, list[int]] = {seq: [t] for seq, t in nxt.items()}
        for step in range(n - 1):
            seqs = list(prompts)
            self.decode([(out[s][-1], len(prompts[s]) + step, s, True) for s in seqs])
            for row, s in enumerate(seqs):
                out[s].append(self.argmax(row))
        return out

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)


def tokenize(vocab: object, text: str) -> list[int]:
    data = text.encode()
    buf = (llama_cpp.llama_token * (len(data) + 8))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), True, True)
    return list(buf[:n])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", type=Path, default=ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(
        str(args.model).encode(), llama_cpp.llama_model_default_params()
    )
    vocab = llama_cpp.llama_model_get_vocab(model)
    context = " ".join(f"Fact {i}: depot {i} stores {i * 7} crates." for i in range(90))
    prompts = [
        tokenize(vocab, f"{context}\nQuestion {q}: how many crates in depot {q}?")
        for q in (3, 5, 8, 13)
    ]
    shared = next(i for i, (a, b) in enumerate(zip(prompts[0], prompts[1], strict=False)) if a != b)
    print(f"prompt {len(prompts[0])} tokens, shared prefix {shared}")

    for unified in (False, True):
        name = f"kv_unified={unified}"
        # 1. what a copy costs: a 1-token decode right after a copy vs without one
        ctx = Context(model, unified, args.threads)
        t0 = time.perf_counter()
        ctx.prefill(prompts[0], 0)
        prefill_s = time.perf_counter() - t0
        plain, copied = [], []
        for _rep in range(5):
            plain.append(ctx.decode([(prompts[1][shared], shared, 2, True)]))
            llama_cpp.llama_memory_seq_rm(ctx.mem, 2, -1, -1)
            llama_cpp.llama_memory_seq_cp(ctx.mem, 0, 1, -1, -1)
            llama_cpp.llama_memory_seq_rm(ctx.mem, 1, shared, -1)
            copied.append(ctx.decode([(prompts[1][shared], shared, 1, True)]))
            llama_cpp.llama_memory_seq_rm(ctx.mem, 1, -1, -1)
        copy_ms = (statistics.median(copied) - statistics.median(plain)) * 1000
        print(
            f"{name}: prefill of {len(prompts[0])} tokens {prefill_s * 1000:.0f} ms; "
            f"1-token decode {statistics.median(plain) * 1000:.1f} ms, after a copy "
            f"{statistics.median(copied) * 1000:.1f} ms (copy ~{copy_ms:.1f} ms)"
        )
        ctx.close()

        # 2. greedy output: alone vs batched with 3 others vs after a copied prefix
        ctx = Context(model, unified, args.threads)
        alone = ctx.greedy({0: prompts[1]}, 24, {})[0]
        ctx.close()
        ctx = Context(model, unified, args.threads)
        batched = ctx.greedy({s: prompts[s] for s in range(N_SEQ)}, 24, {})[1]
        ctx.close()
        ctx = Context(model, unified, args.threads)
        ctx.greedy({0: prompts[0], 2: prompts[2]}, 8, {})
        llama_cpp.llama_memory_seq_cp(ctx.mem, 0, 1, -1, -1)
        llama_cpp.llama_memory_seq_rm(ctx.mem, 1, shared, -1)
        after_copy = ctx.greedy({1: prompts[1], 3: prompts[3]}, 24, {1: shared})[1]
        ctx.close()
        print(
            f"{name}: greedy batched == alone: {batched == alone}; "
            f"after copy == alone: {after_copy == alone}"
        )
    llama_cpp.llama_model_free(model)


if __name__ == "__main__":
    main()
