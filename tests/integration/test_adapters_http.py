"""Named LoRA adapters over HTTP: listed by /v1/models, picked by ``model``, echoed back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.server_proc import ServerHandle, running_server
from tests.integration.test_engine import write_lora

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    lora = write_lora(tmp_path_factory.mktemp("lora") / "fix.gguf", rank=4, scale_b=0.5)
    with running_server({"GGSERVE_LORA_ADAPTERS": f"fix={lora}", "GGSERVE_N_SLOTS": "2"}) as h:
        yield h


def ask(server: ServerHandle, model: object) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": "Name three fruits."}],
            "max_tokens": 24,
            "temperature": 0,
        },
        headers=server.headers,
        timeout=120,
    )


def test_the_adapter_is_listed_with_its_base(served: ServerHandle) -> None:
    cards = httpx.get(served.url + "/v1/models", headers=served.headers).json()["data"]
    adapters = [c for c in cards if c.get("kind") == "adapter"]
    assert [(c["id"], c["parent"]) for c in adapters] == [("fix", cards[0]["id"])]


def test_a_request_picks_the_adapter_by_model(served: ServerHandle) -> None:
    base = ask(served, None).json()
    tuned = ask(served, "fix").json()
    assert tuned["model"] == "fix" and base["model"] != "fix"
    assert tuned["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"]
    # Any other name is the base model, as before adapters existed (clients send their own).
    other = ask(served, "gpt-4o-mini").json()
    assert other["choices"][0]["message"]["content"] == base["choices"][0]["message"]["content"]


def test_the_responses_api_picks_the_adapter_too(served: ServerHandle) -> None:
    def respond(model: str) -> dict[str, Any]:
        response = httpx.post(
            served.url + "/v1/responses",
            json={
                "model": model,
                "input": "Name three fruits.",
                "max_output_tokens": 24,
                "temperature": 0,
            },
            headers=served.headers,
            timeout=120,
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def text(response: dict[str, Any]) -> str:
        return "".join(
            part["text"]
            for item in response["output"]
            if item["type"] == "message"
            for part in item["content"]
        )

    tuned, base = respond("fix"), respond("anything-else")
    assert tuned["model"] == "fix" and base["model"] != "fix"
    chat = ask(served, "fix").json()["choices"][0]["message"]["content"]
    assert text(tuned) == chat != text(base)


@pytest.mark.parametrize("model", [123, ["fix"], {"name": "fix"}])
def test_a_model_of_the_wrong_type_is_a_400(served: ServerHandle, model: object) -> None:
    response = ask(served, model)
    assert response.status_code == 400
    assert "model" in response.text


def test_a_bad_adapter_file_is_reported_by_ready_naming_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    bogus = tmp_path_factory.mktemp("bogus") / "not-a-lora.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 64)
    env = {"GGSERVE_LORA_ADAPTERS": f"fix={bogus}"}
    with running_server(env, wait_ready=False) as server:
        for _ in range(240):
            ready = httpx.get(server.url + "/ready", timeout=5)
            if "not-a-lora.gguf" in ready.text:
                break
            time.sleep(0.25)
        assert ready.status_code == 503
        assert "LoRA adapter" in ready.text and "not-a-lora.gguf" in ready.text
