"""A client that reads its stream very slowly: other streams are not stalled, memory stays bounded.

The engine never waits for a client: each step hands events to per-request queues, and only the
slow client's own response task waits on the socket (uvicorn's flow control). What can pile up
for it is bounded by its max_tokens.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import psutil

from tests.integration.server_proc import ServerHandle

NEVER_STOP = {"0": -100, "2": -100}


def _open_unread_stream(server: ServerHandle, max_tokens: int) -> socket.socket:
    """Send a streaming request on a socket with a tiny receive buffer, and read nothing."""
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "Write a very long story."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "logit_bias": NEVER_STOP,
            "stream": True,
        }
    ).encode()
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((host, int(port)))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nX-API-KEY: {server.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        if not data:
            break
        chunks.append(data)
        if b"data: [DONE]" in b"".join(chunks[-2:]):
            break
        time.sleep(0.001)
    return b"".join(chunks)


def test_a_stalled_reader_neither_blocks_other_streams_nor_grows_memory(
    server: ServerHandle,
) -> None:
    process = psutil.Process(server.proc.pid)
    rss_before = process.memory_info().rss
    slow = [_open_unread_stream(server, max_tokens=200) for _ in range(2)]
    try:
        time.sleep(1.0)
        started = time.monotonic()
        response = httpx.post(
            server.url + "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "Count to five."}],
                "max_tokens": 32,
                "temperature": 0,
                "logit_bias": NEVER_STOP,
            },
            headers=server.headers,
            timeout=60,
        )
        fast_s = time.monotonic() - started
        assert response.status_code == 200
        assert response.json()["usage"]["completion_tokens"] == 32
        # generous for a loaded 2-core CI box; a stall would never finish at all
        assert fast_s < 45, f"a normal request took {fast_s:.1f}s next to stalled readers"
        time.sleep(4)  # the stalled streams' generations run to max_tokens meanwhile
        growth_mb = (process.memory_info().rss - rss_before) / 2**20
        assert growth_mb < 50, f"RSS grew {growth_mb:.0f} MB with two stalled readers"
        # the slow readers finally read: their streams are complete, nothing was lost
        for sock in slow:
            raw = _read_all(sock, 120)
            assert raw.startswith(b"HTTP/1.1 200")
            assert b'"finish_reason":"length"' in raw.replace(b" ", b"")
            assert b"data: [DONE]" in raw
    finally:
        for sock in slow:
            sock.close()
    assert server.proc.poll() is None
