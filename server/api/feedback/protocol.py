"""POST /v1/feedback: the request and response bodies."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from server.feedback.records import Rating, RatingError

MAX_COMMENT_CHARS = 2000
MAX_CORRECTION_CHARS = 8000
MAX_TAGS = 16

Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w .:/+-]+$")]


class FeedbackRequest(BaseModel):
    """A rating of one response this key received, with an optional correction."""

    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(
        ...,
        min_length=1,
        max_length=160,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The `id` of the /v1/ask, chat or completion response being rated.",
    )
    # Declared before rating so the rating check can read it.
    scale: Literal["thumbs", "stars"] | None = Field(
        None, description="Say 'stars' to send a one-star rating."
    )
    rating: StrictInt = Field(
        ..., description="+1 / -1 (thumbs) or 1-5 (stars); 1 is a thumb up unless scale=stars."
    )
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS)
    correction: str | None = Field(
        None, max_length=MAX_CORRECTION_CHARS, description="What the answer should have been."
    )
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)

    @field_validator("rating")
    @classmethod
    def _rating_fits_scale(cls, value: int, info: ValidationInfo) -> int:
        try:
            Rating.parse(value, info.data.get("scale"))
        except RatingError as exc:
            raise ValueError(str(exc)) from exc
        return value

    def parsed_rating(self) -> Rating:
        """The rating as the store records it."""
        return Rating.parse(self.rating, self.scale)


class FeedbackResponse(BaseModel):
    """What was stored: ``created`` (201) or ``updated`` (200, replacing earlier feedback)."""

    response_id: str
    status: Literal["created", "updated"]
    rating: int
    scale: Literal["thumbs", "stars"]
    correction_status: Literal["pending"] | None
