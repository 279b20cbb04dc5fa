"""``ggserve ask`` and ``ggserve health`` find the server and key in ``.env`` like the server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.client_settings import ClientSettings
from cli.main import app

runner = CliRunner()
KEY = "ggs-from-dotenv"


class _Stub(BaseHTTPRequestHandler):
    """Answers /ready and /v1/ask like the server, 401 unless the .env key is presented."""

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply(200, {"status": "ready", "model": "stub-model"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("x-api-key") != KEY:
            self._reply(401, {"error": {"message": "Invalid API key.", "request_id": "r1"}})
            return
        self._reply(200, {"answer": "forty-two", "sources": [], "timings": {}})


@pytest.fixture
def stub_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("GGSERVE_URL", "GGSERVE_HOST", "GGSERVE_PORT", "GGSERVE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_ask_uses_the_key_and_port_written_in_dotenv(in_project: Path, stub_port: int) -> None:
    (in_project / ".env").write_text(f"GGSERVE_PORT={stub_port}\nGGSERVE_API_KEY={KEY}\n")
    result = runner.invoke(app, ["ask", "what is it?", "--no-stream"])
    assert result.exit_code == 0, result.stdout
    assert "forty-two" in result.stdout


def test_ask_without_a_key_anywhere_gets_the_servers_401(in_project: Path, stub_port: int) -> None:
    (in_project / ".env").write_text(f"GGSERVE_PORT={stub_port}\n")
    result = runner.invoke(app, ["ask", "what is it?", "--no-stream"])
    assert result.exit_code == 1
    assert "401" in result.stdout


def test_health_reads_the_port_from_dotenv(in_project: Path, stub_port: int) -> None:
    (in_project / ".env").write_text(f"GGSERVE_HOST=0.0.0.0\nGGSERVE_PORT={stub_port}\n")
    result = runner.invoke(app, ["health"])
    assert result.exit_code == 0
    assert "ready: stub-model" in result.stdout


def test_flags_beat_the_environment_which_beats_dotenv(
    in_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (in_project / ".env").write_text("GGSERVE_API_KEY=from-file\nGGSERVE_URL=http://file:1\n")
    assert ClientSettings().server_url() == "http://file:1"
    monkeypatch.setenv("GGSERVE_URL", "http://env:2/")
    monkeypatch.setenv("GGSERVE_API_KEY", "from-env")
    settings = ClientSettings()
    assert settings.server_url() == "http://env:2"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "from-env"
