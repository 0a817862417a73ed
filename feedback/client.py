"""A Python client for the app's HTTP API (/api/v1), on the standard library only: it needs no
server code and nothing beyond Python itself (export_dataset needs the `datasets` package).

    from feedback.client import Client

    api = Client("http://127.0.0.1:8501", token)   # a token from `python -m feedback tokens create`
    api.compare("Name a prime.", ["7", "8"], models=["model-a", "model-b"], project="default")
    for label in api.labels(project="default"):
        print(label["choice"], label["client_id"])
    api.export("dpo", path="dpo.jsonl", project="default")
    api.export_dataset("dpo", "dpo-dataset", project="default")  # datasets.load_from_disk opens it

Every error the API reports comes as ApiError with its status and message. Requests the server
turned away before acting (429 rate limited, 503 database busy) and failed connections are
retried with backoff, except where a retry could act twice (starting a job, promoting).
Records are idempotent on their client id, which `compare` derives from the content when none
is given, so a retried or re-run push never makes a second item.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

RETRY_STATUSES = (429, 502, 503, 504)
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")


class ApiError(Exception):
    """The API said no: `status` is the HTTP status (0: the server could not be reached)."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None):
        super().__init__(f"{status}: {message}" if status else message)
        self.status, self.message, self.body = status, message, body or {}


class JobFailed(ApiError):
    """wait(): the job ended without succeeding; `job` is its last state."""

    def __init__(self, job: dict[str, Any]):
        super().__init__(0, f"job {job['id']} {job['status']}: {(job.get('error') or '').strip()[:2000]}".strip())
        self.job = job


def record_id(*parts: Any) -> str:
    """A client id from a record's content: the same record always gets the same id."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "c-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:40]


class Client:
    def __init__(self, url: str, token: str, *, timeout: float = 60.0, retries: int = 4):
        """`url`: where the app runs (http://127.0.0.1:8501); the API is under /api/v1 there."""
        base = url.rstrip("/")
        self.base = base if base.endswith("/api/v1") else base + "/api/v1"
        self._token, self.timeout, self.retries = token, timeout, retries

    def __repr__(self) -> str:  # never the token
        return f"Client({self.base!r})"

    # --- HTTP -------------------------------------------------------------------------------

    def _open(self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None,
              retry: bool = True):
        url = self.base + path
        if query:
            pairs = [(k, _text(v)) for k, v in query.items() if v is not None and not isinstance(v, (list, tuple))]
            pairs += [(k, _text(x)) for k, v in query.items() if isinstance(v, (list, tuple)) for x in v]
            url += "?" + urllib.parse.urlencode(pairs)
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                return urllib.request.urlopen(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                payload = _json_or_none(exc.read())
                if retry and exc.code in RETRY_STATUSES and attempt < self.retries:
                    time.sleep(_backoff(attempt, exc.headers.get("Retry-After")))
                    continue
                message = (payload or {}).get("error") or exc.reason or "request failed"
                raise ApiError(exc.code, str(message), payload) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if retry and attempt < self.retries:
                    time.sleep(_backoff(attempt, None))
                    continue
                reason = getattr(exc, "reason", exc)
                raise ApiError(0, f"Cannot reach {self.base}: {reason}") from None
        raise AssertionError("unreachable")

    def _json(self, method: str, path: str, **kwargs) -> Any:
        with self._open(method, path, **kwargs) as response:
            return json.loads(response.read())

    # --- who am I ---------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """The token's user and role."""
        return self._json("GET", "/me")

    # --- data in ----------------------------------------------------------------------------

    def push_prompts(self, prompts: Sequence[str | dict[str, Any]], *, source: str = "api",
                     skip_invalid: bool = False, val_fraction: float = 0.1) -> dict[str, Any]:
        """Import prompts: strings, or rows as in a prompt file ({"prompt" or "messages",
        "reference", "split", "tags", "source"}). All or nothing unless `skip_invalid`; duplicates
        are skipped and counted. Returns the import report."""
        rows = [{"prompt": p} if isinstance(p, str) else p for p in prompts]
        return self._json("POST", "/prompts", body={"prompts": rows, "source": source, "val_fraction": val_fraction,
                                                    "on_error": "skip" if skip_invalid else "abort"})

    def push_record(self, *, project: str, client_id: str, responses: Sequence[dict[str, Any]],
                    prompt: str | None = None, messages: Sequence[dict[str, str]] | None = None,
                    **fields: Any) -> dict[str, Any]:
        """One record as the API takes it (see /api/docs); `fields`: reference, split, tags, metadata."""
        body = {"project": project, "client_id": client_id, "responses": list(responses), "prompt": prompt,
                "messages": list(messages) if messages is not None else None, **fields}
        return self._json("POST", "/records", body={k: v for k, v in body.items() if v is not None})

    def compare(self, prompt: str | Sequence[dict[str, str]], responses: Sequence[str], *, project: str = "default",
                client_id: str | None = None, models: str | Sequence[str] = "external",
                metadata: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        """Put `responses` to `prompt` (a string, or a chat as a list of messages) in front of
        annotators: 2 responses make a pair in a pairwise project, 2..K one item in a rank or rating
        project, each response one item in a binary or edit project. `models` names who wrote each
        response (one name for all, or one per response); the client id defaults to one derived
        from all of it. Returns the record: its item ids, and `created` False if it was there."""
        names = [models] * len(responses) if isinstance(models, str) else list(models)
        if len(names) != len(responses):
            raise ValueError(f"{len(responses)} responses but {len(names)} model names.")
        chat = None if isinstance(prompt, str) else list(prompt)
        client_id = client_id or record_id(project, prompt, list(responses), names)
        return self.push_record(project=project, client_id=client_id, prompt=prompt if chat is None else None,
                                messages=chat, metadata=metadata, **fields,
                                responses=[{"text": text, "model": name} for text, name in zip(responses, names,
                                                                                                strict=True)])

    # --- labels and exports -----------------------------------------------------------------

    def claim(self, project: str = "default") -> dict[str, Any] | None:
        """The caller's current item in `project`, or a newly leased one (their role and membership
        allowing); None when nothing is left for them. Its `responses` are in the order shown."""
        return self._json("POST", f"/projects/{urllib.parse.quote(project, safe='')}/claim")["item"]

    def label(self, assignment_id: int, *, submission_id: str, next: bool = False, **answer: Any) -> dict[str, Any]:
        """Label a claimed item with one answer of its kind (preferred=, thumb=, ranks=, ratings= or
        edited_text=; rationale=, strength=), given in the order shown. Retried safely: the same
        `submission_id` returns the same label (choose a fresh one per answer, e.g. uuid4().hex); a
        different one for a labelled item is ApiError 409. With next=True the answer carries
        `next`, the following item (None: nothing left, `next_refused` says if it was refused)."""
        body = {"submission_id": submission_id, "next": next, **answer}
        return self._json("POST", f"/assignments/{int(assignment_id)}/label", body=body)

    def labels(self, *, project: str | None = None, source: str | None = None, kind: str | None = None,
               since: str | datetime | None = None, after: int = 0, page_size: int = 200) -> Iterator[dict[str, Any]]:
        """Every label matching the filters, oldest first, fetched a page at a time. `since`: a
        datetime or an ISO 8601 time (UTC without an offset); `after`: a label id to start after
        (resume from the last one you saw)."""
        if isinstance(since, datetime):
            since = since.isoformat()
        while True:
            page = self._json("GET", "/labels", query={"project": project, "source": source, "kind": kind,
                                                       "since": since, "after": after, "limit": page_size})
            yield from page["labels"]
            if page["next_after"] is None:
                return
            after = page["next_after"]

    def export(self, fmt: str, *, path: str | Path | None = None, project: str | None = None,
               sources: Sequence[str] | None = None, include_val: bool = False, file: str = "jsonl",
               **settings: Any) -> list[dict[str, Any]] | Path:
        """TRL training rows of `fmt` (dpo, kto, reward, sft); `settings` are the conversion
        settings (rule, rank_pairs, kto_threshold, ...). Without `path`, the rows; with `path`, the
        rows written there as they stream in (JSON lines, or parquet with file="parquet"),
        atomically, and the path."""
        query = {"project": project, "source": list(sources) if sources else None, "include_val": include_val,
                 "file": file, **settings}
        with self._open("GET", f"/exports/{urllib.parse.quote(fmt)}", query=query) as response:
            if path is None:
                if file != "jsonl":
                    raise ValueError("Give a path to write a parquet export to.")
                return [json.loads(line) for line in response if line.strip()]
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            with open(tmp, "wb") as out:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
            tmp.replace(target)
            return target

    def export_dataset(self, fmt: str, directory: str | Path, *, with_test: bool = False, metadata: bool = False,
                       **filters: Any) -> Path:
        """The export of `fmt` as a Hugging Face `datasets.DatasetDict` written with `save_to_disk`
        to `directory` (`datasets.load_from_disk(directory)["train"]` is what TRL trains on):
        "train" from the train prompts and, with `with_test`, "test" from the val prompts (held out
        for the gate: only when asked). `filters`: export's (project, sources) and its conversion
        settings. `metadata` asks for the metadata columns too. `with_test` and `metadata` need a
        server whose export takes `split` and `metadata`; one that does not is reported as an
        ApiError and nothing is written. An earlier dataset in `directory` is replaced (anything
        else there is refused); a reader never sees half a dataset. Needs the `datasets` package."""
        for name in ("include_val", "split", "file", "path"):
            if name in filters:
                raise ValueError(f"export_dataset chooses {name!r} itself: train from the train prompts, "
                                 "test from the val prompts with with_test=True.")
        target = Path(directory)
        _check_dataset_target(target)
        extra = {"metadata": True} if metadata else {}
        # Without include_val the export holds the train prompts only (prompts are train or val).
        train = self._export_for_dataset(fmt, filters, extra)
        if not train:
            raise ValueError(f"No labels on train prompts to export as {fmt} (label some items first).")
        test = self._export_for_dataset(fmt, filters, {**extra, "split": "val"}) if with_test else None

        from datasets import Dataset, DatasetDict  # only here: the rest of the client needs no datasets

        # One schema for both splits, inferred from all the rows (chat messages as lists of
        # role/content structs); an empty split is an empty table of the same columns.
        features = Dataset.from_list(train + (test or [])).features
        splits = {"train": train} if test is None else {"train": train, "test": test}
        dataset = DatasetDict({name: Dataset.from_list(rows, features=features) if rows
                               else Dataset.from_dict({column: [] for column in features}, features=features)
                               for name, rows in splits.items()})
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        dataset.save_to_disk(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        return target

    def _export_for_dataset(self, fmt: str, filters: dict[str, Any], extra: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return self.export(fmt, **filters, **extra)
        except ApiError as exc:
            # A server whose export has no such parameter refuses it (422, "Unknown query parameter").
            unknown = [name for name in extra if repr(name) in exc.message]
            if exc.status == 422 and unknown and "Unknown query parameter" in exc.message:
                asked = {"split": "with_test (the val split on its own)", "metadata": "metadata"}
                raise ApiError(422, f"This server's export does not offer {' or '.join(asked[n] for n in unknown)}; "
                                    "nothing was written. Ask without it, or on the server run `python -m "
                                    f"feedback export {fmt} --to-dataset DIR` (--with-test, --metadata).",
                               exc.body) from None
            raise

    # --- jobs and policies ------------------------------------------------------------------

    def start_job(self, kind: str, config: dict[str, Any] | None = None, **settings: Any) -> dict[str, Any]:
        """Start a job (sample, judge, grade, train, loop) with the settings that differ from the
        kind's defaults, as a dict or keywords; returns its state (see `wait`)."""
        return self._json("POST", "/jobs", body={"kind": kind, "config": {**(config or {}), **settings}},
                          retry=False)

    def job(self, job: int | dict[str, Any]) -> dict[str, Any]:
        return self._json("GET", f"/jobs/{_job_id(job)}")

    def jobs(self, *, kind: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        return self._json("GET", "/jobs", query={"kind": kind, "limit": limit})

    def cancel(self, job: int | dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", f"/jobs/{_job_id(job)}/cancel")

    def wait(self, job: int | dict[str, Any], *, timeout: float | None = 3600.0, poll: float = 2.0,
             check: bool = True) -> dict[str, Any]:
        """Poll the job until it ends; its final state. TimeoutError after `timeout` seconds
        (None: no limit); JobFailed if it did not succeed (unless `check` is False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.job(job)
            if state["status"] in FINISHED:
                if check and state["status"] != "succeeded":
                    raise JobFailed(state)
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {state['id']} is still {state['status']} after {timeout:g} s "
                                   f"({state['progress_done']}/{state['progress_total'] or '?'})")
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))

    def policies(self) -> list[dict[str, Any]]:
        """Every policy version with its status and gate decision (outside models are `ext:<name>`)."""
        return self._json("GET", "/policies")

    def promote(self, name: str, *, override_reason: str | None = None, resample: bool = True) -> dict[str, Any]:
        """Deploy `name` and make it the active policy (admins); rolling back is promoting an older one."""
        return self._json("POST", f"/policies/{urllib.parse.quote(name, safe='')}/promote",
                          body={"override_reason": override_reason, "resample": resample}, retry=False)


def _check_dataset_target(target: Path) -> None:
    """A dataset directory may replace an earlier dataset or fill an empty directory, nothing else."""
    if target.exists() and not (target.is_dir() and (not any(target.iterdir())
                                                     or (target / "dataset_dict.json").exists())):
        raise ValueError(f"{target} exists and is not a dataset directory: choose another directory.")


def _job_id(job: int | dict[str, Any]) -> int:
    return int(job["id"] if isinstance(job, dict) else job)


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _json_or_none(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _backoff(attempt: int, retry_after: str | None) -> float:
    if retry_after:
        try:
            return min(60.0, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return min(30.0, 0.5 * 2 ** attempt)
