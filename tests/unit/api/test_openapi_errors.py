"""The OpenAPI document describes the error envelope the server really sends, not FastAPI's 422."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.unit.api.conftest import auth

ENVELOPE = {"$ref": "#/components/schemas/ErrorResponse"}


def test_every_operation_documents_the_envelope_and_no_422(
    make_client: Callable[..., TestClient],
) -> None:
    spec = make_client().get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            if method == "post":
                assert responses["400"]["content"]["application/json"]["schema"] == ENVELOPE
            if operation.get("security"):
                assert "401" in responses and "429" in responses, (method, path)


def test_streaming_endpoints_document_server_sent_events(
    make_client: Callable[..., TestClient],
) -> None:
    spec = make_client().get("/openapi.json").json()
    ok = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(ok) == {"application/json", "text/event-stream"}


def test_a_validation_error_matches_the_documented_envelope(
    client: TestClient,
) -> None:
    spec = client.get("/openapi.json").json()
    detail = spec["components"]["schemas"]["ErrorDetail"]
    response = client.post("/v1/chat/completions", json={"messages": "nope"}, headers=auth())
    assert response.status_code == 400
    assert set(response.json()["error"]) == set(detail["properties"])
    assert set(detail["required"]) <= set(response.json()["error"])
