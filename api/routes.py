"""The endpoints under /api/v1. Each checks the caller (api.auth) and calls one service."""
from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, params
from fastapi.dependencies.utils import get_flat_params
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from api.auth import Admin, Anyone, Caller, Reader, get_engine
from api.errors import error
from api.schemas import (
    SETTING_NAMES,
    AnswerIn,
    ClaimOut,
    ErrorOut,
    ExportQuery,
    JobIn,
    JobOut,
    LabelPageOut,
    MeOut,
    PolicyOut,
    PromoteIn,
    PromoteOut,
    PromptsPushed,
    PushPrompts,
    RecordIn,
    RecordOut,
    SubmittedOut,
)
from db.engine import session_scope
from db.models import LABEL_KINDS, LABEL_SOURCES, Job, PolicyVersion, User
from feedback import jobs, queue
from feedback.errors import UserError
from feedback.export import FORMATS, export_rows
from feedback.label_pages import MAX_LABELS_PAGE, read_labels
from feedback.policies import gate_decision, list_policies
from feedback.prompts import import_prompt_rows
from feedback.records import push_record
from feedback.release import release_policy
from feedback.settings import get_settings
from feedback.tokens import token_info

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": what} for status, what in (
        (400, "Bad input, or a state the caller can fix: the message says which."),
        (401, "No token, or an unknown, expired or revoked one."),
        (403, "The token's user does not have the role this needs."),
        (404, "No such project, policy version, job ..."),
        (413, "The body is over API_MAX_BODY_BYTES."),
        (422, "The body does not match the schema."),
        (429, "Over API_RATE_LIMIT_PER_MINUTE for this token (see Retry-After)."),
    )
}

def _known_query_only(request: Request) -> None:
    """Refuse query parameters an endpoint does not take: a misspelt filter would otherwise be
    ignored and the caller would get every row instead of the ones asked for."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    # Query parameters, and the fields of a query-parameter model (the export's settings), which
    # come flattened without the Query marker.
    known = {field.alias for field in get_flat_params(route.dependant)
             if not isinstance(field.field_info, params.Path | params.Header | params.Cookie)}
    unknown = sorted(set(request.query_params) - known)
    if unknown:  # 422, as FastAPI answers a query parameter of the wrong type
        raise HTTPException(422, f"Unknown query parameter{'s' * (len(unknown) > 1)}: "
                                 f"{', '.join(repr(name[:40]) for name in unknown[:5])}; this endpoint takes "
                                 f"{', '.join(sorted(known)) or 'none'}.")


router = APIRouter(prefix="/v1", responses=ERRORS, dependencies=[Depends(_known_query_only)])
Format = Literal[FORMATS]  # type: ignore[valid-type]
Source = Literal[LABEL_SOURCES]  # type: ignore[valid-type]
LabelKind = Literal[LABEL_KINDS]  # type: ignore[valid-type]


@router.get("/me", response_model=MeOut, tags=["tokens"], summary="Who this token acts as")
def me(who: Anyone) -> dict[str, Any]:
    with session_scope(get_engine(), read_only=True) as session:
        info = token_info(session=session, token=who.token)
    return {"username": who.actor.user.username, "role": who.actor.user.role,
            "token": {"id": info.id, "name": info.name, "prefix": info.prefix, "expires_at": info.expires_at}}


@router.post("/prompts", response_model=PromptsPushed, tags=["data"], summary="Push prompts (admins)")
def push_prompts(body: PushPrompts, who: Admin) -> Any:
    """Like a prompt file import: duplicates are skipped and counted; with on_error=abort nothing is
    written if any prompt is bad, and the answer is 400 listing every bad one."""
    rows = ((f"prompt {n}", p.model_dump(exclude_none=True)) for n, p in enumerate(body.prompts, start=1))
    with session_scope(get_engine()) as session:
        report = import_prompt_rows(session=session, actor=who.actor, rows=rows, source=body.source,
                                    on_error=body.on_error, val_fraction=body.val_fraction, what="api")
    out = {"inserted": report.inserted, "duplicates": report.duplicates, "committed": report.committed,
           "errors": [{"where": e.where, "reason": e.reason} for e in report.errors], "summary": report.summary()}
    if not report.committed:
        return error(400, out["summary"], errors=out["errors"])
    return out


@router.post("/records", response_model=RecordOut, tags=["data"], status_code=201,
             responses={200: {"model": RecordOut, "description": "This client id was pushed before: its item(s)."},
                        409: {"model": ErrorOut, "description": "The client id names a different record."}},
             summary="Push a record: a prompt and its responses, as a project's items (admins)")
def push(body: RecordIn, response: Response, who: Admin) -> Any:
    values = body.model_dump(exclude_none=True)
    with session_scope(get_engine()) as session:
        record = push_record(session=session, actor=who.actor, **values)
    if not record.created:
        response.status_code = 200
    return record


@router.get("/labels", response_model=LabelPageOut, tags=["data"], summary="Read labels, oldest first (reviewers)")
def labels(who: Reader, project: str | None = None, source: Source | None = None, kind: LabelKind | None = None,
           since: Annotated[str | None, Query(description="Labelled at or after this (ISO 8601; UTC when no "
                                                          "offset is given).",
                                              json_schema_extra={"format": "date-time"})] = None,
           after: Annotated[int, Query(ge=0, le=2**62, description="A label id: the labels after it (the previous "
                                                                    "page's `next_after`).")] = 0,
           limit: Annotated[int, Query(ge=1, le=MAX_LABELS_PAGE)] = 100) -> Any:
    with session_scope(get_engine(), read_only=True) as session:
        page = read_labels(session=session, actor=who.actor, project=project, source=source, kind=kind,
                           since=_iso_time(since, "since"), after=after, limit=limit)
    return page


@router.get("/exports/{fmt}", tags=["data"], summary="Export labels as TRL training rows (reviewers)",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/jsonl": {}, "application/vnd.apache.parquet": {}},
                             "description": "JSON lines (one row a line, streamed), or a parquet file."}})
def export(fmt: Annotated[Format, Path(description="dpo, kto, reward or sft (feedback/export.py).")],
           query: Annotated[ExportQuery, Query()], who: Reader) -> Response:
    settings = {name: getattr(query, name) for name in SETTING_NAMES if getattr(query, name) is not None}
    sources = {"sources": tuple(query.source)} if query.source else {}
    with session_scope(get_engine(), read_only=True) as session:
        rows = export_rows(session=session, fmt=fmt, include_val=query.include_val, project=query.project,
                           split=query.split, policy_versions=tuple(query.policy_version or ()), since=query.since,
                           metadata=query.metadata, **sources, **settings)
    headers = {"X-Rows": str(len(rows))}
    if query.file == "parquet":
        import pandas as pd

        buffer = io.BytesIO()
        pd.DataFrame(rows).to_parquet(buffer, index=False)
        headers["Content-Disposition"] = f'attachment; filename="{fmt}.parquet"'
        return Response(buffer.getvalue(), media_type="application/vnd.apache.parquet", headers=headers)

    def lines() -> Iterator[bytes]:
        for row in rows:
            yield (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode("utf-8")

    return StreamingResponse(lines(), media_type="application/jsonl", headers=headers)


@router.post("/projects/{project}/claim", response_model=ClaimOut, tags=["annotation"],
             summary="The caller's current item in a project, or a newly leased one (annotators)")
def claim(project: Annotated[str, Path(max_length=64)], who: Anyone) -> Any:
    """What a labelling page shows next: the item stays the caller's until its lease ends or they
    label it; claiming again before that gives the same item. `item` null: nothing left for them."""
    with session_scope(get_engine()) as session:
        found = queue.claim_next(session=session, user=_attached(session, who), project=project)
        return {"item": _item(found)}


@router.post("/assignments/{assignment_id}/label", response_model=SubmittedOut, tags=["annotation"],
             responses={409: {"model": ErrorOut, "description": "The item was labelled already, under another "
                                                                "submission id: this answer was not recorded."}},
             summary="Label a claimed item, and with next=true claim the next one (annotators)")
def label(assignment_id: Annotated[int, Path(ge=1, le=2**62)], body: AnswerIn, who: Anyone) -> Any:
    """Idempotent on `submission_id`: a retried submit returns the label the first one wrote."""
    answer = body.model_dump(exclude={"submission_id", "next"})
    try:
        return _label(assignment_id, body, answer, who)
    except queue.AlreadyLabelled as exc:
        raise HTTPException(409, str(exc)) from None


def _label(assignment_id: int, body: AnswerIn, answer: dict[str, Any], who: Caller) -> dict[str, Any]:
    with session_scope(get_engine()) as session:
        user = _attached(session, who)
        if body.next:
            done = queue.submit_then_claim(session=session, user=user, assignment_id=assignment_id,
                                           submission_id=body.submission_id, **answer)
            written, following, refused = done.label, _item(done.next), done.refused
        else:
            written, following, refused = queue.submit_answer(
                session=session, user=user, assignment_id=assignment_id, submission_id=body.submission_id,
                **answer), None, None
        return {"label_id": written.id, "submission_id": written.submission_id, "next": following,
                "next_refused": refused}


def _attached(session: Session, who: Caller) -> User:
    # The caller's user was read, all its columns, by api.auth in its own read-only session: put a
    # copy into this write session without reading it again.
    return session.merge(who.actor.user, load=False)


def _item(claim: queue.Claim | None) -> dict[str, Any] | None:
    if claim is None:
        return None
    return {"assignment_id": claim.assignment_id, "item_id": claim.item_id, "kind": claim.kind,
            "messages": claim.messages, "responses": list(claim.responses), "expires_at": claim.expires_at}


@router.post("/jobs", response_model=JobOut, status_code=201, tags=["jobs"], summary="Start a job (admins)")
def start_job(body: JobIn, who: Admin) -> Any:
    """Queues the job (its config is checked now, against its kind) and starts its worker, as the
    pages do. `train` freezes its snapshot first and is refused while another round is active."""
    with session_scope(get_engine()) as session:
        if body.kind == "train":
            from training.rounds import start_round  # loads torch: only when a round is asked for

            job = start_round(session=session, config=jobs.check_config("train", body.config), actor=who.actor)
        else:
            job = jobs.create_job(session=session, kind=body.kind, config=body.config, actor=who.actor)
    jobs.start_detached(job=job, database_url=get_settings().database_url)  # after the commit: it finds the row
    return job


@router.get("/jobs", response_model=list[JobOut], tags=["jobs"], summary="Recent jobs, newest first (admins)")
def recent_jobs(who: Admin, kind: str | None = None, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> Any:
    with session_scope(get_engine()) as session:  # a write session: stale workers are marked interrupted
        return jobs.list_jobs(session=session, limit=limit, kind=kind)


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"], summary="A job's status and progress (admins)")
def job_status(job_id: Annotated[int, Path(ge=1, le=2**62)], who: Admin) -> Any:
    with session_scope(get_engine()) as session:
        jobs.mark_stale(session=session)
        job = session.get(Job, job_id)
        if job is None:
            raise UserError(f"No job {job_id}.")
        return job


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"], summary="Ask a job to stop (admins)")
def cancel_job(job_id: Annotated[int, Path(ge=1, le=2**62)], who: Admin) -> Any:
    with session_scope(get_engine()) as session:
        jobs.request_cancel(session=session, job_id=job_id, actor=who.actor)
        return session.get(Job, job_id)


@router.get("/policies", response_model=list[PolicyOut], tags=["policies"],
            summary="Policy versions, oldest first (reviewers)")
def policies(who: Reader) -> Any:
    with session_scope(get_engine(), read_only=True) as session:
        versions = list_policies(session=session)
    return [_policy(v, {x.id: x.name for x in versions}) for v in versions]


@router.post("/policies/{name}/promote", response_model=PromoteOut, tags=["policies"],
             summary="Deploy and make a version the active policy (admins)")
def promote(name: Annotated[str, Path(max_length=64)], body: PromoteIn, who: Admin) -> Any:
    """What the Training page's Promote does (feedback.release.release_policy); rolling back is
    promoting an older version."""
    release = release_policy(engine=get_engine(), name=name, actor=who.actor, resample=body.resample,
                             override_reason=body.override_reason)
    return {"name": release.name, "deployed": release.deployed, "sampling_jobs": release.sampling_jobs,
            "summary": release.summary()}


def _iso_time(text: str | None, name: str) -> datetime | None:
    """An ISO 8601 time (RFC 3339, as the schema says; a bare date or no offset is read as UTC)."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.strip().upper())
    except ValueError:
        raise UserError(f"{name} is an ISO 8601 time such as 2026-12-01T09:30:00Z, not {text[:40]!r}.") from None


def _policy(v: PolicyVersion, names: dict[int, str]) -> dict[str, Any]:
    return {"name": v.name, "status": v.status, "parent": names.get(v.parent_id), "stage": v.stage,
            "base_model": v.base_model, "job_id": v.job_id, "gate": gate_decision(v), "evaluation": v.evaluation,
            "created_at": v.created_at}
