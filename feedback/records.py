"""Records from outside (the HTTP API and feedback.client): a prompt with responses from named
models or policy versions, made into one project's items; and labels read back page by page.

A record becomes what sampling would have made of the same responses (feedback.sampling.make_items):
- pairwise: exactly 2 responses, one pair;
- rank, rating: 2 to the project's K responses, one item holding them by position;
- binary, edit: 1 to MAX_RESPONSES responses, one item per response.
Their texts must differ (up to white space) where they are compared, so no position is dropped.

A response names either `model` (anything outside this app: it is filed under the policy version
`ext:<model>`, status "external", made on first use) or `policy_version` (an existing one).

Idempotent on the caller's client id, unique per project: pushing the same record again, even from
20 clients at once, returns the item(s) the first push made (`created` False) and writes nothing.
The item holds the client id; a binary or edit record of several responses makes items
`<client id>`, `<client id>#1`, `<client id>#2` ... (so '#' is not allowed in a client id). The
same client id with a different prompt or responses is refused (Conflict), never merged.

Concurrency follows feedback/queue.py: the unique constraints decide, inside savepoints
(`session.begin_nested()`), and the loser of a race reads what the winner wrote. SQLite serialises
write transactions anyway (BEGIN IMMEDIATE); Postgres makes the second insert wait for the first
transaction and then fail on the constraint.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (
    Item,
    ItemResponse,
    PolicyVersion,
    Project,
    Prompt,
    Response,
)
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.policies import external_version, policy_by_name
from feedback.projects import get_project
from feedback.prompt_files import RowInvalid, type_name
from feedback.prompts import PromptRow, validate_row
from feedback.sampling import distinct, make_items
from feedback.settings import Settings, get_settings

MAX_RESPONSES = 8  # per record: K is at most 8, and binary/edit records stay as small
CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,119}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,59}")  # ext:<model> fits policy_versions.name
FINISH_REASON_MAX_CHARS = 32
METADATA_MAX_BYTES = 16_000  # a record's metadata (and each response's), as JSON


class Conflict(UserError):
    """The client id already names a different record (HTTP 409)."""


@dataclass(frozen=True)
class RecordResponse:
    text: str
    model: str | None = None
    policy_version: str | None = None
    finish_reason: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class PushedRecord:
    project: str
    client_id: str
    prompt_id: int
    split: str  # of the prompt: a prompt already stored keeps its own
    item_ids: list[int]
    response_ids: list[int]  # in the order given: response_ids[0] is an item's response a
    created: bool  # False: the client id was pushed before, and this is what that push made


def push_record(*, session: Session, actor: Actor, project: str, client_id: str, responses: list[Any],
                prompt: str | None = None, messages: list | None = None, reference: str | None = None,
                split: str | None = None, tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
                settings: Settings | None = None) -> PushedRecord:
    """Make one record into `project`'s items (admins only); see the module docstring.

    `responses` are {"text", "model" | "policy_version", optional "finish_reason", "metadata"}.
    A new prompt is stored with `reference`, `tags` and `split` (default "train": pushed records
    are for labelling, not the held-out split, unless asked) and source "api"."""
    actor.require("admin")
    settings = settings or get_settings()
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise UserError("A client id is 1-120 characters: letters, digits and . _ : @ / + = - "
                        "(not starting with a punctuation mark; '#' is reserved).")
    wanted = _responses(responses, max_chars=settings.import_max_prompt_chars)
    _check_metadata(metadata, "metadata")
    try:
        row = validate_row({"prompt": prompt, "messages": messages, "reference": reference, "split": split,
                            "tags": tags}, max_prompt_chars=settings.import_max_prompt_chars)
    except RowInvalid as exc:
        raise UserError(f"Bad prompt: {exc}.") from None
    target = get_project(session=session, name=project)
    _check_shape(target, wanted)

    existing = _existing_record(session, target, client_id, row, wanted)
    if existing is not None:
        return existing
    try:
        with session.begin_nested():
            made = _make_record(session, actor, target, client_id, row, wanted, metadata)
    except IntegrityError:
        # Another push of this client id won the race: return what it made.
        existing = _existing_record(session, target, client_id, row, wanted)
        if existing is None:
            raise
        return existing
    return made


def _responses(raw: Any, *, max_chars: int) -> list[RecordResponse]:
    if not isinstance(raw, list) or not raw:
        raise UserError("'responses' must be a non-empty list of {text, model} objects.")
    if len(raw) > MAX_RESPONSES:
        raise UserError(f"A record has at most {MAX_RESPONSES} responses, not {len(raw)}.")
    out = []
    for n, r in enumerate(raw, start=1):
        where = f"response {n}"
        if not isinstance(r, dict):
            raise UserError(f"{where} must be an object with 'text' and 'model', got {type_name(r)}.")
        unknown = set(r) - {"text", "model", "policy_version", "finish_reason", "metadata"}
        if unknown:
            raise UserError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))} "
                            "(known: text, model, policy_version, finish_reason, metadata).")
        text = r.get("text")
        if not isinstance(text, str):
            raise UserError(f"{where}: 'text' must be a string.")
        if len(text) > max_chars:
            raise UserError(f"{where} is {len(text)} characters, the limit is {max_chars} (IMPORT_MAX_PROMPT_CHARS).")
        if "\x00" in text:
            raise UserError(f"{where} contains a NUL character.")
        model, version = r.get("model"), r.get("policy_version")
        if (model is None) == (version is None):
            raise UserError(f"{where}: give either 'model' (a model outside this app) or 'policy_version' "
                            "(one of this app's), not both or neither.")
        if model is not None and (not isinstance(model, str) or not MODEL_NAME.fullmatch(model)):
            raise UserError(f"{where}: a model name is 1-60 characters: letters, digits and . _ : @ / + -.")
        if version is not None and not isinstance(version, str):
            raise UserError(f"{where}: 'policy_version' must be a version's name, e.g. 'v1'.")
        finish = r.get("finish_reason")
        if finish is not None and (not isinstance(finish, str) or len(finish) > FINISH_REASON_MAX_CHARS):
            raise UserError(f"{where}: 'finish_reason' is a string of at most {FINISH_REASON_MAX_CHARS} characters.")
        _check_metadata(r.get("metadata"), f"{where}: 'metadata'")
        out.append(RecordResponse(text=text, model=model, policy_version=version, finish_reason=finish,
                                  metadata=r.get("metadata")))
    return out


def _check_metadata(value: Any, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise UserError(f"{what} must be an object.")
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError):
        raise UserError(f"{what} must be plain JSON (no NaN or infinity).") from None
    if size > METADATA_MAX_BYTES:
        raise UserError(f"{what} is {size} bytes as JSON, the limit is {METADATA_MAX_BYTES}.")
    if "\x00" in json.dumps(value):  # Postgres JSONB cannot hold it
        raise UserError(f"{what} contains a NUL character.")


def _check_shape(project: Project, wanted: list[RecordResponse]) -> None:
    n, task = len(wanted), project.task_type
    if task == "pairwise" and n != 2:
        raise UserError(f"Project {project.name!r} is pairwise: a record has exactly 2 responses, not {n}.")
    if task in ("rank", "rating") and not 2 <= n <= project.k:
        raise UserError(f"Project {project.name!r} ({task}, K={project.k}) takes 2 to {project.k} responses per "
                        f"record, not {n}.")
    if task in ("pairwise", "rank", "rating"):
        keep = distinct([r.text for r in wanted])
        if len(keep) < n:
            first = next(i for i in range(n) if i not in keep)
            raise UserError(f"Response {first + 1} repeats an earlier one (up to white space); the responses of a "
                            f"{task} record must differ.")


def _make_record(session: Session, actor: Actor, project: Project, client_id: str, row: PromptRow,
                 wanted: list[RecordResponse], metadata: dict[str, Any] | None) -> PushedRecord:
    prompt = _prompt_for(session, row)
    versions: dict[tuple[str, str], PolicyVersion] = {}
    for r in wanted:
        key = ("model", r.model) if r.model is not None else ("version", r.policy_version)
        if key not in versions:
            versions[key] = external_version(session=session, actor=actor, model=r.model) if r.model is not None \
                else policy_by_name(session=session, name=r.policy_version)
    responses = []
    for r in wanted:
        version = versions[("model", r.model) if r.model is not None else ("version", r.policy_version)]
        params: dict[str, Any] = {"source": "api", "client_id": client_id}
        if metadata:
            params["metadata"] = metadata
        if r.metadata:
            params["response_metadata"] = r.metadata
        responses.append(Response(prompt_id=prompt.id, policy_version_id=version.id, text=r.text, params=params,
                                  finish_reason=r.finish_reason))
    session.add_all(responses)
    session.flush()
    items = make_items(session=session, project=project, prompt=prompt, responses=responses)
    if not items:  # cannot happen after _check_shape; never leave responses without an item
        raise UserError("These responses make no item (are they all the same text?).")
    for n, item in enumerate(items):
        item.client_id = client_id if n == 0 else f"{client_id}#{n}"
    session.flush()  # the unique (project, client id) decides a race here
    actor.record(session=session, action="records.push", target=f"item:{items[0].id}",
                 details={"project": project.name, "client_id": client_id, "items": len(items),
                          "policy_versions": sorted({v.name for v in versions.values()})})
    return PushedRecord(project=project.name, client_id=client_id, prompt_id=prompt.id, split=prompt.split,
                        item_ids=[i.id for i in items], response_ids=[r.id for r in responses], created=True)


def _prompt_for(session: Session, row: PromptRow) -> Prompt:
    """The stored prompt with this content, or a new one; the first copy wins (as in an import)."""
    found = session.scalar(select(Prompt).where(Prompt.content_hash == row.content_hash))
    if found is not None:
        return found
    prompt = Prompt(text=row.text, messages=row.messages, reference=row.reference, split=row.split or "train",
                    tags=row.tags, source="api", content_hash=row.content_hash)
    try:
        with session.begin_nested():
            session.add(prompt)
    except IntegrityError:  # pushed by another record at the same moment
        return session.scalars(select(Prompt).where(Prompt.content_hash == row.content_hash)).one()
    return prompt


def _existing_record(session: Session, project: Project, client_id: str, row: PromptRow,
                     wanted: list[RecordResponse]) -> PushedRecord | None:
    ids = [client_id] + [f"{client_id}#{n}" for n in range(1, MAX_RESPONSES)]
    items = list(session.scalars(select(Item).where(Item.project_id == project.id, Item.client_id.in_(ids))
                                 .order_by(Item.id)))
    if not items or items[0].client_id != client_id:
        return None
    prompt = session.get(Prompt, items[0].prompt_id)
    if items[0].kind in ("rank", "rating"):
        response_ids = list(session.scalars(select(ItemResponse.response_id).where(ItemResponse.item_id == items[0].id)
                                            .order_by(ItemResponse.position)))
    elif items[0].kind == "pair":
        response_ids = [items[0].response_a_id, items[0].response_b_id]
    else:
        response_ids = [item.response_a_id for item in items]
    texts = dict(session.execute(select(Response.id, Response.text).where(Response.id.in_(response_ids))).all())
    if prompt.content_hash != row.content_hash or [texts[i] for i in response_ids] != [r.text for r in wanted]:
        raise Conflict(f"The client id {client_id!r} already names a different record in {project.name!r} "
                       f"(item {items[0].id}); give new data a new client id.")
    return PushedRecord(project=project.name, client_id=client_id, prompt_id=prompt.id, split=prompt.split,
                        item_ids=[i.id for i in items], response_ids=response_ids, created=False)
