"""/docs renders its operations in headless Chromium with every non-loopback host unreachable."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest

from tests.integration.server_proc import ROOT, ServerHandle

pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "test-artifacts"


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium not installed (make test installs it: make system-deps)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                # No network: any host other than loopback fails to resolve, so a CDN asset
                # would fail to load and the page would stay empty.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=8000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def test_swagger_ui_renders_operations_offline(server: ServerHandle) -> None:
    dom = chromium("--dump-dom", server.url + "/docs").stdout
    assert "swagger-ui" in dom
    assert "opblock" in dom, "Swagger UI did not render the operations list"
    for path in ("/v1/chat/completions", "/v1/ask", "/health"):
        assert path in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "docs.png"
    chromium(f"--screenshot={shot}", "--window-size=1280,1400", server.url + "/docs")
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_redoc_assets_are_served_locally(server: ServerHandle) -> None:
    import httpx

    page = httpx.get(server.url + "/redoc").text
    assert "cdn." not in page and "/static-offline-docs/redoc.standalone.js" in page
    assert httpx.get(server.url + "/static-offline-docs/redoc.standalone.js").status_code == 200
