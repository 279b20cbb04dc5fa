"""A small HTTP load generator for integration tests: several clients, every outcome counted.

Each client loops over chat completions (half of them streamed) and /ready probes until
stopped; a request counts as failed on any non-200 status, a transport error, a stream without
its final ``[DONE]`` or with an error event. Used to prove that a model swap drops nothing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12}


@dataclass
class LoadReport:
    """What the clients saw."""

    ok: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    ready_not_200: int = 0
    models_seen: Counter[str] = field(default_factory=Counter)

    @property
    def total_ok(self) -> int:
        return sum(self.ok.values())


class LoadGenerator:
    """``with LoadGenerator(url, headers) as load: ...`` runs clients until the block ends."""

    def __init__(self, url: str, headers: dict[str, str], clients: int = 4) -> None:
        self.url = url
        self.headers = headers
        self.clients = clients
        self.report = LoadReport()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LoadGenerator:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        thread = threading.Thread(target=self._probe, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def wait_for(self, successes: int, timeout: float = 120) -> None:
        """Block until the clients have ``successes`` more successful requests."""
        target = self.report.total_ok + successes
        deadline = time.monotonic() + timeout
        while self.report.total_ok < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"load made {self.report.total_ok}/{target} requests")
            time.sleep(0.05)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=120) as client:
            count = 0
            while not self._stop.is_set():
                stream = (index + count) % 2 == 0
                count += 1
                try:
                    outcome = self._stream(client) if stream else self._plain(client)
                except httpx.HTTPError as exc:
                    outcome = f"transport error: {exc!r}"
                with self._lock:
                    if outcome.startswith("model:"):
                        self.report.ok["stream" if stream else "plain"] += 1
                        self.report.models_seen[outcome.removeprefix("model:")] += 1
                    else:
                        self.report.failures.append(outcome)

    def _plain(self, client: httpx.Client) -> str:
        response = client.post("/v1/chat/completions", json=CHAT)
        if response.status_code != 200:
            return f"{response.status_code}: {response.text[:200]}"
        return "model:" + str(response.json()["model"])

    def _stream(self, client: httpx.Client) -> str:
        with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
            body = "".join(r.iter_text())
            if r.status_code != 200:
                return f"{r.status_code}: {body[:200]}"
        if '"error"' in body or "data: [DONE]" not in body:
            return f"broken stream: {body[-200:]}"
        return "model:stream"

    def _probe(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    status = client.get("/ready").status_code
                except httpx.HTTPError:
                    status = 0
                if status != 200:
                    with self._lock:
                        self.report.ready_not_200 += 1
                time.sleep(0.05)
