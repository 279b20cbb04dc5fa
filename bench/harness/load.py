"""Load on loopback: measured streaming chat runs (benchmarks) and background traffic (tests).

:func:`run_load`: ``concurrency`` clients each take the next request from a shared list and
send the next one as soon as their stream ends, until the list is empty or the time budget
runs out. Per request it records TTFT (send → first non-empty content delta), total latency,
completion tokens (the server's ``usage`` when it sends one, otherwise the number of content
chunks) and whether the stream ended properly (``[DONE]`` and a finish_reason). Requests are
greedy with a fixed ``max_tokens``; the caller biases end-of-generation tokens away so every
request generates the same number of tokens on every server, and :func:`summarize` reports
whether that held.

:class:`LoadGenerator`: clients sending chat completions (half streamed) and a ``/ready`` probe
in the background until the block ends, every outcome counted, through the same request code
(:func:`stream_one`, :func:`post_one`): what the integration tests use to prove that a model
swap or a promotion drops nothing.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.harness.stats import percentile

# SmolLM2's end-of-generation tokens: <|endoftext|> (0) and <|im_end|> (2).
SMOLLM2_EOS_BIAS = {"0": -100.0, "2": -100.0}


@dataclass
class ChatRequest:
    """One chat completion to send: the messages and the number of tokens to generate."""

    messages: list[dict[str, str]]
    max_tokens: int


@dataclass
class RequestResult:
    """What one streamed request measured (seconds since the run started for ``started``)."""

    started: float
    ttft: float | None = None
    latency: float | None = None
    tokens: int = 0
    chunks: int = 0
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    finish_reason: str | None = None
    done: bool = False
    error: str | None = None
    text: str = ""
    model: str | None = None

    @property
    def complete(self) -> bool:
        """The stream ended with ``[DONE]`` and a finish_reason, without an error."""
        return self.error is None and self.done and self.finish_reason is not None


@dataclass
class LoadResult:
    """All requests of one run, with its concurrency and wall-clock duration."""

    concurrency: int
    wall_s: float
    max_tokens: int
    results: list[RequestResult] = field(default_factory=list)
    timed_out: bool = False


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError(f"benchmark traffic goes to loopback only, not to {host!r}")


def chat_body(request: ChatRequest, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of a greedy streaming chat completion with EOS biased away."""
    return {
        "model": "bench",
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": SMOLLM2_EOS_BIAS,
        **extra,
    }


def _apply_usage(result: RequestResult, usage: dict[str, Any]) -> None:
    if usage.get("completion_tokens") is not None:
        result.tokens = int(usage["completion_tokens"])
    if usage.get("prompt_tokens") is not None:
        result.prompt_tokens = int(usage["prompt_tokens"])
    details = usage.get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        result.cached_prompt_tokens = int(details["cached_tokens"])


def _apply_chunk(result: RequestResult, chunk: dict[str, Any], t0: float) -> bool:
    """Fold one SSE chunk into ``result``; returns True when usage was reported."""
    saw_usage = False
    if chunk.get("model"):
        result.model = str(chunk["model"])
    if chunk.get("usage"):
        _apply_usage(result, chunk["usage"])
        saw_usage = True
    # llama-server reports the prompt tokens it took from its cache in "timings".
    timings = chunk.get("timings")
    if isinstance(timings, dict) and "cache_n" in timings:
        result.cached_prompt_tokens = int(timings["cache_n"])
    for choice in chunk.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content is not None and (content or result.chunks):
            result.chunks += 1
        if content:
            if result.ttft is None:
                result.ttft = time.perf_counter() - t0
            result.text += content
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
    return saw_usage


async def stream_one(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    run_start: float,
    limit_s: float,
) -> RequestResult:
    """Send one streaming chat completion and measure it; never raises for server faults."""
    t0 = time.perf_counter()
    result = RequestResult(started=t0 - run_start)
    saw_usage = False
    try:
        async with asyncio.timeout(limit_s):
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode(errors="replace")[:300]
                    result.error = f"HTTP {resp.status_code}: {text}"
                    return result
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        result.done = True
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        result.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
                        break
                    saw_usage |= _apply_chunk(result, chunk, t0)
    except TimeoutError:
        result.error = f"timed out after {limit_s:.0f}s"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.latency = time.perf_counter() - t0
    if not saw_usage:
        result.tokens = result.chunks
    return result


async def post_one(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    run_start: float,
    limit_s: float,
) -> RequestResult:
    """Send one non-streamed chat completion; ``done`` when it answered 200 with a choice."""
    t0 = time.perf_counter()
    result = RequestResult(started=t0 - run_start)
    try:
        resp = await client.post(url + "/v1/chat/completions", json=body, timeout=limit_s)
        if resp.status_code != 200:
            result.error = f"HTTP {resp.status_code}: {resp.text[:300]}"
        else:
            data = resp.json()
            result.model = data.get("model")
            _apply_usage(result, data.get("usage") or {})
            choice = (data.get("choices") or [{}])[0]
            result.text = (choice.get("message") or {}).get("content") or ""
            result.finish_reason = choice.get("finish_reason")
            result.done = True
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.latency = time.perf_counter() - t0
    return result


async def run_load(
    url: str,
    requests: Sequence[ChatRequest],
    concurrency: int,
    *,
    headers: dict[str, str] | None = None,
    extra_body: dict[str, Any] | None = None,
    request_timeout: float = 300.0,
    budget_s: float = 900.0,
) -> LoadResult:
    """Run ``requests`` through ``concurrency`` closed-loop clients against ``url``.

    Stops handing out new requests once ``budget_s`` has passed (``timed_out`` is then set);
    requests already in flight still finish or hit ``request_timeout``.
    """
    _check_loopback(url)
    queue: asyncio.Queue[ChatRequest] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    max_tokens = max((r.max_tokens for r in requests), default=0)
    out = LoadResult(concurrency=concurrency, wall_s=0.0, max_tokens=max_tokens)
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(request_timeout, connect=10.0)
    run_start = time.perf_counter()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            if time.perf_counter() - run_start > budget_s:
                out.timed_out = True
                return
            request = queue.get_nowait()
            body = chat_body(request, extra_body or {})
            out.results.append(await stream_one(client, url, body, run_start, request_timeout))

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    out.wall_s = time.perf_counter() - run_start
    return out


def summarize(load: LoadResult) -> dict[str, Any]:
    """Aggregate tok/s (completed tokens / wall time), p50/p95 TTFT and latency, failures."""
    done = [r for r in load.results if r.complete]
    ttfts = [r.ttft for r in done if r.ttft is not None]
    latencies = [r.latency for r in done if r.latency is not None]
    tokens = sum(r.tokens for r in done)
    decode_rates = [
        (r.tokens - 1) / (r.latency - r.ttft)
        for r in done
        if r.ttft is not None and r.latency is not None and r.latency > r.ttft and r.tokens > 1
    ]
    return {
        "concurrency": load.concurrency,
        "requests": len(load.results),
        "completed": len(done),
        "incomplete": len(load.results) - len(done),
        "full_length": sum(1 for r in done if r.tokens == load.max_tokens),
        "max_tokens": load.max_tokens,
        "tokens": tokens,
        "wall_s": round(load.wall_s, 3),
        "throughput_tok_s": round(tokens / load.wall_s, 2) if load.wall_s > 0 else None,
        "ttft_p50_s": _round(percentile(ttfts, 50)),
        "ttft_p95_s": _round(percentile(ttfts, 95)),
        "latency_p50_s": _round(percentile(latencies, 50)),
        "latency_p95_s": _round(percentile(latencies, 95)),
        "per_stream_decode_tok_s_p50": _round(percentile(decode_rates, 50), 2),
        "timed_out": load.timed_out,
        "errors": sorted({r.error for r in load.results if r.error})[:5],
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def raw_results(load: LoadResult) -> list[dict[str, Any]]:
    """Per-request records for the JSON output (text dropped: it is the same everywhere)."""
    return [{k: v for k, v in asdict(r).items() if k != "text"} for r in load.results]


# --- background traffic ---------------------------------------------------------------------

SHORT_CHAT: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 12,
}


@dataclass
class LoadReport:
    """What the background clients saw."""

    ok: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    ready_not_200: int = 0
    models_seen: Counter[str] = field(default_factory=Counter)

    @property
    def total_ok(self) -> int:
        return sum(self.ok.values())


class LoadGenerator:
    """``with LoadGenerator(url, headers) as load: ...`` runs clients until the block ends.

    Each client alternates streamed and plain chat completions (:data:`SHORT_CHAT`); a request
    fails on any non-200 status, a transport error, or a stream without its ``[DONE]`` and
    finish_reason or with an error event. A probe meanwhile counts ``/ready`` answers other
    than 200. The clients run on their own event loop in a background thread.
    """

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        clients: int = 4,
        body: dict[str, Any] | None = None,
        request_timeout: float = 120.0,
    ) -> None:
        _check_loopback(url)
        self.url = url
        self.headers = headers
        self.clients = clients
        self.body = body or SHORT_CHAT
        self.request_timeout = request_timeout
        self.report = LoadReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.request_timeout + 10)

    def wait_for(self, successes: int, timeout: float = 120) -> None:
        """Block until the clients have ``successes`` more successful requests."""
        target = self.report.total_ok + successes
        deadline = time.monotonic() + timeout
        while self.report.total_ok < target:
            if not self._thread.is_alive():
                raise RuntimeError("the load generator's thread stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"load made {self.report.total_ok}/{target} requests")
            time.sleep(0.05)

    async def _run(self) -> None:
        timeout = httpx.Timeout(self.request_timeout, connect=10.0)
        async with httpx.AsyncClient(headers=self.headers, timeout=timeout) as client:
            await asyncio.gather(
                self._probe(client), *(self._client(client, i) for i in range(self.clients))
            )

    async def _client(self, client: httpx.AsyncClient, index: int) -> None:
        count = 0
        start = time.perf_counter()
        while not self._stop.is_set():
            streamed = (index + count) % 2 == 0
            count += 1
            if streamed:
                body = {**self.body, "stream": True}
                result = await stream_one(client, self.url, body, start, self.request_timeout)
            else:
                result = await post_one(client, self.url, self.body, start, self.request_timeout)
            if result.complete:
                self.report.ok["stream" if streamed else "plain"] += 1
                self.report.models_seen[result.model or "?"] += 1
            else:
                kind = "stream" if streamed else "plain"
                self.report.failures.append(f"{kind}: {result.error or 'no [DONE]'}")

    async def _probe(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            try:
                status = (await client.get(self.url + "/ready", timeout=30)).status_code
            except httpx.HTTPError:
                status = 0
            if status != 200:
                self.report.ready_not_200 += 1
            await asyncio.sleep(0.05)
