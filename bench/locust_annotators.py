"""The locustfile of bench/annotators_http.py: one locust user is one annotator with its own token.

Each annotator claims an item, then loops: (think), submit a pairwise label with a fresh
submission id and get the next item: in one request (ANNOTATORS_STEP=combined, the label endpoint
with next=true) or as a submit then a claim (separate). The latency of one step is from the start
of the submit to the next item in hand, which is what a person waits for after clicking.
Locust's own statistics get it as the request "submit+next"; each worker process also appends one
JSON line per acknowledged submit to its own file, for exact percentiles and the lost/duplicate
check against the database afterwards.

Configured by the environment (bench/annotators_http.py sets it; locust forks its worker
processes, which inherit it):

    ANNOTATORS_TOKENS   a file of API tokens, one a line (one per annotator)
    ANNOTATORS_OUT      a directory: claimed-<n> marks (who took token n), <pid>.jsonl results
    ANNOTATORS_THINK_S  seconds between an item's arrival and its submit (0: none)
    ANNOTATORS_STEP     combined (default) or separate
    ANNOTATORS_PROJECT  the project's name (default: default)

Nothing here imports the project: the workers are clients only.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from locust import FastHttpUser, constant, task
from locust.exception import StopUser

TOKENS = Path(os.environ.get("ANNOTATORS_TOKENS", "tokens.txt"))
OUT = Path(os.environ.get("ANNOTATORS_OUT", "."))
THINK_S = float(os.environ.get("ANNOTATORS_THINK_S", "0"))
COMBINED = os.environ.get("ANNOTATORS_STEP", "combined") == "combined"
# The API application served alone (bench/annotators_http.py), so without the app's /api mount.
CLAIM = f"/v1/projects/{os.environ.get('ANNOTATORS_PROJECT', 'default')}/claim"
STEP = "submit+next"

_results = None  # this process's results file, opened on first use (after locust forks)


def _write(record: dict) -> None:
    global _results
    if _results is None:
        _results = open(OUT / f"{os.getpid()}.jsonl", "a", buffering=1)  # noqa: SIM115 - open for the process
    _results.write(json.dumps(record) + "\n")


def _take_token() -> str:
    """The first token no other annotator (in any worker process) has taken: O_EXCL marks."""
    for n, token in enumerate(TOKENS.read_text().split()):
        try:
            os.close(os.open(OUT / f"claimed-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return token
    raise StopUser  # more locust users than tokens: this one does not run


class Annotator(FastHttpUser):
    wait_time = constant(THINK_S)

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {_take_token()}"}
        self.queue_empty = False
        self.current = self._claim()

    def _claim(self) -> dict | None:
        """The next item; None when the queue has nothing left for this annotator (queue_empty)
        or the request failed (tried again at the next step)."""
        with self.client.post(CLAIM, json={}, headers=self.headers, name="claim",
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"claim {response.status_code}: {response.text[:200]}")
                _write({"error": f"claim {response.status_code}: {response.text[:200]}"})
                return None
            item = response.json()["item"]
            self.queue_empty = item is None
            return item

    @task
    def label_one(self) -> None:
        if self.current is None:
            if self.queue_empty:
                _write({"dry": True})
                raise StopUser
            self.current = self._claim()  # the last claim failed: try again
            return
        submission_id = uuid.uuid4().hex
        began = time.perf_counter()
        path = f"/v1/assignments/{self.current['assignment_id']}/label"
        with self.client.post(path, json={"submission_id": submission_id, "preferred": "left", "next": COMBINED},
                              headers=self.headers, name="submit", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"submit {response.status_code}: {response.text[:200]}")
                _write({"error": f"submit {response.status_code}: {response.text[:200]}"})
                self.current = self._claim()
                return
            submitted = response.json()
        acked_at = time.time()
        if COMBINED:
            self.current = submitted["next"]
            self.queue_empty = self.current is None
        else:
            self.current = self._claim()
        elapsed_ms = (time.perf_counter() - began) * 1000
        self.environment.events.request.fire(request_type="STEP", name=STEP, response_time=elapsed_ms,
                                             response_length=0, exception=None, context={})
        _write({"submission_id": submission_id, "ms": elapsed_ms, "at": acked_at,
                "claimed": self.current is not None})
