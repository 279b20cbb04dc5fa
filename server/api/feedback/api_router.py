"""/v1/feedback route: thin, the work is in ``serving.py``."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Response

from server.api.deps import KeyIdDep, ServicesDep
from server.api.feedback.protocol import FeedbackRequest, FeedbackResponse
from server.api.feedback.serving import FeedbackServing

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    status_code=201,
    responses={200: {"description": "Earlier feedback on this response was replaced."}},
)
async def feedback(
    body: FeedbackRequest, response: Response, key_id: KeyIdDep, services: ServicesDep
) -> FeedbackResponse:
    """Rate a response this key received (👍/👎 or 1-5 stars), optionally with a correction."""
    stored, status = await FeedbackServing(services).submit(body, key_id)
    response.status_code = status
    return stored


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
