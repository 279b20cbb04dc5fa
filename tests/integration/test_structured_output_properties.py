"""Property: on the real model, a JSON-schema answer that ends ``stop`` always validates.

Random schemas from the bounded family agents send (tests/schema_strategies.py) × a few prompts,
through the shared HTTP server: every ``stop`` answer parses and validates against its schema,
and no answer is both ``stop`` and invalid (an invalid one would come back as a refusal).
Small and derandomized so it runs in well under a minute on two cores.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.integration.server_proc import ServerHandle
from tests.schema_strategies import object_schemas

pytestmark = pytest.mark.slow

PROMPTS = (
    "Describe Paris as a record.",
    "Give me an example record about a red car from 1999.",
    "Fill in the fields.",
)


@settings(
    max_examples=8,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schema=object_schemas(), prompt=st.sampled_from(PROMPTS), strict=st.booleans())
def test_every_stop_answer_validates_against_its_schema(
    server: ServerHandle, schema: dict[str, Any], prompt: str, strict: bool
) -> None:
    payload = {
        "model": "m",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 64,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "record", "strict": strict, "schema": schema},
        },
    }
    response = httpx.post(
        server.url + "/v1/chat/completions", json=payload, headers=server.headers, timeout=120
    )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    message = choice["message"]
    event(f"finish_reason={choice['finish_reason']}, answered={message['content'] is not None}")
    if choice["finish_reason"] != "stop":
        assert choice["finish_reason"] == "length"
        return
    if message["content"] is None:  # caught: said as a refusal, never returned as the answer
        assert message["refusal"].startswith("The model's answer does not satisfy")
        return
    jsonschema.validate(json.loads(message["content"]), schema)  # stop means valid
