"""``POST /v1/feedback``: a native feedback record about a trace, into ``landing/feedback/<day>/``.

The trace id is the ``x-loop-trace-id`` the chat response carried; ingest joins the two, also when
the feedback comes days later.
"""

from __future__ import annotations

import uuid
from typing import Literal, Optional, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loop_pipeline.router.chat_request import read_json_body
from loop_pipeline.router.errors import bad_request
from loop_pipeline.router.records import utc_now
from loop_pipeline.router.trace_writer import serialize

# loop_pipeline.schemas.feedback's sets (not imported: it pulls pandera into the router's start);
# a test keeps the two equal.
FEEDBACK_KINDS = ("accepted", "edited", "rejected", "regenerated", "thumbs", "human_label", "hallucination", "judge_score", "copied")
FEEDBACK_SOURCES = ("user", "human_reviewer", "code", "llm")

router = APIRouter()


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trace_id: str = Field(min_length=1, max_length=200)
    kind: Literal[FEEDBACK_KINDS]
    value: Optional[Union[bool, float]] = None
    label: Optional[str] = None
    edited_output: Optional[str] = None
    source: Literal[FEEDBACK_SOURCES] = "user"
    annotator_id: Optional[str] = None

    @model_validator(mode="after")
    def _edit_has_text(self) -> "FeedbackIn":
        if self.kind == "edited" and not (self.edited_output or "").strip():
            raise ValueError("edited_output is required when kind is edited")
        return self


def _problem(exc: ValidationError) -> tuple[str, str | None]:
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"]) or None
    return f"{field + ': ' if field else ''}{error['msg']}", field


@router.post("/v1/feedback")
async def post_feedback(request: Request) -> JSONResponse:
    state = request.app.state.router
    state.keys.check(request.headers.get("authorization"))
    body = await read_json_body(request, state.settings.max_body_bytes)
    try:
        feedback = FeedbackIn.model_validate(body)
    except ValidationError as exc:
        message, field = _problem(exc)
        raise bad_request(f"Invalid feedback: {message}", param=field, code="invalid_feedback", rejection="invalid_feedback") from None
    now = utc_now()
    feedback_id = f"fb-{uuid.uuid4().hex}"
    value = float(feedback.value) if feedback.value is not None else None
    record = {
        "feedback_id": feedback_id,
        "trace_id": feedback.trace_id,
        "timestamp": now.isoformat(timespec="microseconds"),
        "kind": feedback.kind,
        "value": value,
        "label": feedback.label,
        "edited_output": feedback.edited_output,
        "source": feedback.source,
        "annotator_id": feedback.annotator_id,
    }
    state.feedback.submit(now.strftime("%Y-%m-%d"), serialize(record))
    return JSONResponse({"object": "feedback", "id": feedback_id, "trace_id": feedback.trace_id})
