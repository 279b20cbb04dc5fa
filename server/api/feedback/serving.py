"""POST /v1/feedback: a key rates a response it received; the rules are in docs/flywheel.md.

- 201 ``created`` the first time, 200 ``updated`` when the same key rates again (the new rating,
  comment, correction and tags replace the old ones; a changed correction is pending again);
- 409 once a curator accepted or rejected the correction (``ggserve feedback label``): curated
  feedback is frozen so a later click cannot undo a review;
- 404 for an id that was not captured, was purged, or belongs to another key (the same answer,
  so ids of other keys cannot be probed);
- 503 when the database cannot be written (full or read-only disk); nothing half-written.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from server.api.errors import ConflictError, NotFoundError, ServiceUnavailableError
from server.api.feedback.protocol import FeedbackRequest, FeedbackResponse
from server.feedback.records import Feedback
from server.feedback.service import CaptureOffError
from server.feedback.store import FeedbackLockedError, StoreError, UnknownResponseError
from server.runtime.services import Services


class FeedbackServing:
    """Stores feedback through the app's ``FeedbackService``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def submit(self, body: FeedbackRequest, key_id: str) -> tuple[FeedbackResponse, int]:
        """Store the feedback; the response body and its status (201 or 200)."""
        service = self.services.feedback
        rating = body.parsed_rating()
        feedback = Feedback(
            response_id=body.response_id,
            key_id=key_id,
            rating=rating,
            comment=body.comment.strip() or None if body.comment else None,
            correction=body.correction.strip() or None if body.correction else None,
            tags=tuple(body.tags),
        )
        try:
            if service is None:
                raise CaptureOffError(
                    "capture is off on this server (GGSERVE_CAPTURE=off): responses are not "
                    "stored, so they cannot be rated"
                )
            outcome = await asyncio.to_thread(service.put_feedback, feedback)
        except CaptureOffError as exc:
            raise NotFoundError(str(exc), code="capture_off", param="response_id") from exc
        except UnknownResponseError as exc:
            raise NotFoundError(
                f"No response '{body.response_id}' from this key is stored: the id is unknown, "
                "was purged after the retention period, or belongs to another key.",
                code="response_not_found",
                param="response_id",
            ) from exc
        except FeedbackLockedError as exc:
            raise ConflictError(str(exc), code="feedback_curated", param="response_id") from exc
        except StoreError as exc:
            logger.bind(event="feedback_store_error").error("feedback not stored: {}", exc)
            raise ServiceUnavailableError(
                "The feedback store cannot be written right now; try again later.",
                code="feedback_store_unavailable",
                headers={"Retry-After": "30"},
            ) from exc
        self.services.metrics.feedback.labels(rating=rating.label).inc()
        served = self.services.served
        if outcome == "created" and served is not None and rating.polarity != 0:
            # A first rating counts for the rollout arm that answered (a changed mind does
            # not count twice); a rating of an earlier rollout's response counts for none.
            down = rating.polarity < 0
            try:
                variant = served.rollout.rated(body.response_id, thumbs_down=down)
            except Exception as exc:  # stored already: bookkeeping must not fail the request
                logger.opt(exception=exc).error("rollout rating dropped")
                variant = None
            if variant is not None:
                self.services.metrics.rollout_ratings.labels(
                    variant=variant, rating="down" if down else "up"
                ).inc()
        response = FeedbackResponse(
            response_id=body.response_id,
            status=outcome,
            rating=rating.value,
            scale=rating.scale,
            correction_status="pending" if feedback.correction else None,
        )
        return response, 201 if outcome == "created" else 200
