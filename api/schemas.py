"""Request and response bodies, as the OpenAPI schema shows them. The services check the values
again (and say what is wrong in their own words); these models give the schema its shape."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from db.models import LABEL_SOURCES
from feedback.config_fields import describe
from feedback.rows import RowSettings

LabelSource = Literal[LABEL_SOURCES]  # type: ignore[valid-type]


class Message(BaseModel):
    role: str = Field(description="system, user or assistant; the last message is the user's.")
    content: str


class PromptIn(BaseModel):
    """One prompt: `prompt` (a string) or `messages` (a chat), as in a prompt file."""

    prompt: str | None = None
    messages: list[Message] | None = None
    reference: str | None = Field(None, description="An answer for graders.")
    split: str | None = Field(None, description="train or val (default: assigned from the content hash).")
    tags: list[str] | None = None
    source: str | None = Field(None, description="Where it came from (default: the request's source).")


class PushPrompts(BaseModel):
    prompts: list[PromptIn] = Field(min_length=1)
    source: str = Field("api", max_length=255, description="Stored with prompts that do not name their own.")
    on_error: Literal["abort", "skip"] = Field(
        "abort", description="abort: all or nothing (every bad row is reported); skip: import the valid ones.")
    val_fraction: float = Field(0.1, ge=0, le=1, description="Share of prompts without a split that go to val.")


class RowError(BaseModel):
    where: str
    reason: str


class PromptsPushed(BaseModel):
    inserted: int
    duplicates: int = Field(description="Already stored, or repeated in the request (skipped, never errors).")
    errors: list[RowError]
    committed: bool
    summary: str


class ResponseIn(BaseModel):
    text: str
    model: str | None = Field(None, description="An outside model: filed under the policy version ext:<model>.")
    policy_version: str | None = Field(None, description="Or one of this app's policy versions, e.g. v1.")
    finish_reason: str | None = None
    metadata: dict[str, Any] | None = None


class RecordIn(BaseModel):
    """A prompt with responses, made into the project's items (pairwise: 2 responses; rank and
    rating: 2 to K; binary and edit: 1 to 8, an item each)."""

    project: str
    client_id: str = Field(description="Your id for this record, unique in the project: pushing it again "
                                       "returns the same item(s). 1-120 of A-Z a-z 0-9 . _ : @ / + = -")
    prompt: str | None = None
    messages: list[Message] | None = None
    reference: str | None = None
    split: str | None = Field(None, description="Of a new prompt: train (default) or val.")
    tags: list[str] | None = None
    responses: list[ResponseIn] = Field(min_length=1)
    metadata: dict[str, Any] | None = Field(None, description="Kept with each response (params.metadata).")


class RecordOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    project: str
    client_id: str
    prompt_id: int
    split: str
    item_ids: list[int]
    response_ids: list[int] = Field(description="In the order given: a pair's response a is the first.")
    created: bool = Field(description="False: this client id was pushed before; nothing was written.")


class LabelResponse(BaseModel):
    id: int
    policy_version: str | None


class LabelOut(BaseModel):
    id: int
    created_at: datetime
    project: str
    item_id: int
    client_id: str | None
    prompt_id: int
    item_kind: str
    kind: str
    source: str
    annotator: str | None
    producer: str | None
    choice: str | None = Field(description="Pairs: a, b, tie or both_bad, in the item's own terms "
                                           "(a = responses[0]).")
    strength: str | None
    thumb: str | None
    score: float | None
    ranking: list[int] | None = Field(description="Rank of each position (1 = best), positions as in responses.")
    ratings: list[dict[str, Any]] | None
    edited_text: str | None
    edit_distance: int | None
    rationale: str | None
    shown_order: str | None
    shown_permutation: list[int] | None
    guidelines_id: int | None
    responses: list[LabelResponse]


class LabelPageOut(BaseModel):
    labels: list[LabelOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class JobIn(BaseModel):
    kind: str = Field(description="sample, judge, grade, train or loop.")
    config: dict[str, Any] = Field(default_factory=dict, description="The kind's settings that differ from its "
                                   "defaults (as the CLI's flags: `python -m feedback sample --help` ...).")


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    status: str = Field(description="queued, running, succeeded, failed, cancelled or interrupted.")
    progress_done: int
    progress_total: int | None
    result: dict[str, Any] | None
    error: str | None
    log_tail: str
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class PolicyOut(BaseModel):
    name: str
    status: str = Field(description="candidate, active, retired, rejected or external (an outside model).")
    parent: str | None
    stage: str | None
    base_model: str
    job_id: int | None
    gate: str = Field(description="passed, failed or undecided: the evaluation gate's decision.")
    evaluation: dict[str, Any] | None
    created_at: datetime


class PromoteIn(BaseModel):
    override_reason: str | None = Field(
        None, max_length=500, description="Needed when the version's gate did not pass; kept in the audit log.")
    resample: bool = Field(True, description="Start sampling from it for annotators afterwards.")


class PromoteOut(BaseModel):
    name: str
    deployed: str
    sampling_jobs: list[int]
    summary: str


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    expires_at: datetime | None


class MeOut(BaseModel):
    username: str
    role: str
    token: TokenOut


class ItemOut(BaseModel):
    """An item leased to the caller, in the order they see it (a fresh order per annotator).
    The prompt and the responses are model output or imported text: show them as text."""

    assignment_id: int = Field(description="What a label is submitted for.")
    item_id: int
    kind: str = Field(description="pair, single, rank, rating or edit: which answer a label gives.")
    messages: list[Message] = Field(description="The prompt, as a chat.")
    responses: list[str] = Field(description="The responses' texts as shown: a pair's left then right; "
                                             "rank and rating items: K of them.")
    expires_at: datetime = Field(description="The lease's end: a later label is kept only if the slot is "
                                             "still free.")


class ClaimOut(BaseModel):
    item: ItemOut | None = Field(description="The caller's current item in the project, or a newly leased one; "
                                             "null: nothing left for them.")


class AnswerIn(BaseModel):
    """One answer, as the item's kind takes it, given in the order shown (left/right, the i-th
    response on screen)."""

    submission_id: str = Field(min_length=8, max_length=64,
                               description="Your id for this submit (a fresh random one per answer, e.g. a "
                                           "UUID): sending it again returns the same label.")
    preferred: Literal["left", "right", "tie", "both_bad"] | None = Field(None, description="pair items.")
    strength: Literal["slight", "much"] | None = Field(None, description="pair items, with left or right.")
    thumb: Literal["up", "down"] | None = Field(None, description="single items.")
    ranks: list[int] | None = Field(None, max_length=64, description="rank items: the rank (1 = best, ties "
                                                                     "allowed) of each response as shown.")
    ratings: list[dict[str, Any]] | None = Field(
        None, max_length=64, description='rating items: {"scores": {aspect: 1..5}, "rationales": {aspect: text}} '
                                         "per response as shown.")
    edited_text: str | None = Field(None, description="edit items: the rewrite.")
    rationale: str | None = Field(None, description="Why (at most 4000 characters).")
    next: bool = Field(False, description="Also claim the next item of the project, in the same request "
                                          "(one round trip and one commit instead of two).")


class SubmittedOut(BaseModel):
    label_id: int
    submission_id: str
    next: ItemOut | None = Field(None, description="With next=true: the next item, or null when nothing is left "
                                                   "(or `next_refused` says why none may be handed out).")
    next_refused: str | None = None


class ErrorOut(BaseModel):
    error: str


def _export_query_model() -> type[BaseModel]:
    """The export's query parameters: which labels, and RowSettings' fields with their help, drawn
    from the dataclass so the API never re-declares a conversion setting or its default. Unknown
    parameters are refused (a misspelt setting would otherwise be ignored)."""
    fields: dict[str, Any] = {
        "project": (str | None, Field(None, description="Only this project's labels (default: every project).")),
        "source": (list[LabelSource] | None, Field(None, description="Only labels from these sources (repeatable; "
                                                                     "default: every source).")),
        "include_val": (bool, Field(False, description="Also labels on val prompts (held out for the gate).")),
        "split": (Literal["train", "val"] | None, Field(None, description="Only labels on prompts of this split "
                                                                           "(val: an explicit ask).")),
        "policy_version": (list[str] | None, Field(None, description="Only items whose responses all come from "
                                                                     "these policy versions (repeatable).")),
        "since": (str | None, Field(None, description="Only labels made at or after this (ISO 8601; UTC when "
                                                        "no offset is given).",
                                    json_schema_extra={"format": "date-time"})),
        "metadata": (bool, Field(False, description="Add the metadata columns (ids, label ids, policy versions, "
                                                    "sources, producers, votes, agreement, strength, split, "
                                                    "finish reasons, project) next to TRL's.")),
        "file": (Literal["jsonl", "parquet"], Field("jsonl", description="jsonl: JSON lines, streamed; parquet: "
                                                                         "one file.")),
    }
    for spec in describe(RowSettings):
        kind = Literal[spec.choices] if spec.choices else spec.kind  # type: ignore[valid-type]
        fields[spec.name] = (kind | None, Field(None, description=f"{spec.help} (default: {spec.default!r})"))
    return create_model("ExportQuery", __config__=ConfigDict(extra="forbid"), **fields)


ExportQuery = _export_query_model()
SETTING_NAMES = tuple(spec.name for spec in describe(RowSettings))
