"""/ui in headless Chromium: type a question, watch tokens stream in, 👎 with a correction,
and find the feedback row in the server's database."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from server.feedback.store import FeedbackStore
from tests.integration.cdp import browser_page, chromium_binary
from tests.integration.server_proc import ROOT, ServerHandle

pytestmark = pytest.mark.browser
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def ui_server(capturing: ServerHandle, capture_db: Path) -> tuple[ServerHandle, Path]:
    if chromium_binary() is None:
        pytest.skip("chromium not installed (make test installs it: make system-deps)")
    return capturing, capture_db


def test_ask_stream_and_thumbs_down_with_a_correction_land_in_the_database(
    ui_server: tuple[ServerHandle, Path],
) -> None:
    server, db = ui_server
    with browser_page() as page:
        page.goto(server.url + "/ui")
        page.type_into("#key", server.api_key)
        page.type_into("#question", "What is the capital of France?")
        page.click("#ask")
        response_id = page.wait_for("document.querySelector('#result').dataset.responseId")
        streamed_tokens = int(page.eval("document.querySelector('#answer').dataset.tokens"))
        answer = page.eval("document.querySelector('#answer').textContent")
        assert streamed_tokens > 1 and answer.strip(), "no tokens arrived over the stream"
        # The key lives in this tab's sessionStorage and nowhere else.
        assert page.eval("sessionStorage.getItem('ggserve.apiKey')") == server.api_key
        assert page.eval("localStorage.length") == 0 and page.eval("document.cookie") == ""

        page.click("#thumb-down")
        page.wait_for("document.querySelector('#feedback-status').dataset.sent === '1'")
        page.type_into("#correction", "Paris is the capital of France.")
        page.click("#send-correction")
        page.wait_for("document.querySelector('#feedback-status').dataset.sent === '2'")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(ARTIFACTS / "ui.png")

    stored = FeedbackStore(db, create=False).get_feedback(response_id)
    assert stored is not None
    assert stored.feedback.rating.value == -1
    assert stored.feedback.correction == "Paris is the capital of France."
    assert stored.correction_status == "pending"
    assert stored.interaction.answer is not None
    assert stored.interaction.answer.strip() == answer.strip()
    assert (ARTIFACTS / "ui.png").stat().st_size > 10_000


def test_ui_assets_are_local_and_the_page_sets_a_strict_csp(
    ui_server: tuple[ServerHandle, Path],
) -> None:
    server, _ = ui_server
    page = httpx.get(server.url + "/ui")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("/ui/app.js", "/ui/app.css"):
        assert httpx.get(server.url + asset).status_code == 200
    assert httpx.get(server.url + "/ui/../settings.py").status_code == 404
    assert httpx.get(server.url + "/ui/nope.js").status_code == 404
