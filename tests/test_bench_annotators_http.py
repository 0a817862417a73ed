"""bench/annotators_http.py: its paths against the API in-process (SQLite and Postgres), its
database check and report, and a short real run (uvicorn, locust in two processes). The
endpoints themselves are tested in tests/test_api_annotation.py."""
from __future__ import annotations

import re
import uuid

import pytest
from starlette.testclient import TestClient

from api.server import create_app
from bench import annotators_http
from bench.annotators_http import CLAIM_PATH, Run, check_database, label_path, make_parser, seed, summary_lines


@pytest.fixture
def seeded(use_db):
    """Two annotators (and the solo user) with tokens, over three pair items, overlap 1; the API
    application as the driver serves it (no /api mount)."""
    tokens = seed(use_db, annotators=2, items=3, overlap=1)
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client, tokens, use_db


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_empty_queue_claims_null_and_the_database_check_counts(seeded):
    client, tokens, url = seeded
    acked = []
    item = client.post(CLAIM_PATH, json={}, headers=_auth(tokens[0])).json()["item"]
    while item is not None:  # the driver's combined step: submit with next=true
        acked.append(uuid.uuid4().hex)
        submitted = client.post(label_path(item["assignment_id"]), json={
            "submission_id": acked[-1], "preferred": "right", "next": True}, headers=_auth(tokens[0]))
        submitted.raise_for_status()
        item = submitted.json()["next"]
    assert len(acked) == 3
    assert client.post(CLAIM_PATH, json={}, headers=_auth(tokens[0])).json() == {"item": None}

    run = Run(database="sqlite", mode="nothink", workers=1, think_s=0, annotators=1, processes=1, acked=acked)
    check_database(run, url, overlap=1)
    assert (run.lost, run.duplicates) == (0, 0)
    run.acked = [*acked, "never-stored"]
    check_database(run, url, overlap=1)
    assert run.lost == 1
    # Overlap 1 with three labels on three items is clean; claiming those items "overlap 0" is not.
    check_database(run, url, overlap=0)
    assert run.duplicates == 3


def test_parser_defaults_are_the_issue_settings():
    args = make_parser().parse_args([])
    assert (args.annotators, args.think_s, args.modes, args.databases, args.step) == (
        100, 2.0, "human,nothink", "sqlite,postgres", "combined")
    runs = 2 * len(args.modes.split(",")) * len(args.server_workers.split(","))
    assert runs * (args.duration + 20) <= 600  # the whole run fits in ~10 minutes


def _run(p95_ms: float, *, lost: int = 0) -> Run:
    run = Run(database="sqlite", mode="human", workers=1, think_s=2, annotators=100, processes=4, lost=lost,
              submissions=100)
    run.latencies_ms = [p95_ms / 2] * 94 + [p95_ms] * 6
    return run


def test_summary_says_met_only_under_the_goal_with_nothing_lost():
    assert "p95 human pace = 40.0 ms" in summary_lines([_run(40)])[0]
    assert summary_lines([_run(40)])[0].endswith("MET)") and "NOT MET" not in summary_lines([_run(40)])[0]
    assert "NOT MET" in summary_lines([_run(60)])[0]
    assert "NOT MET" in summary_lines([_run(40, lost=1)])[0]
    assert summary_lines([_run(40, lost=1)])[-1].endswith("NO")
    nothing = _run(40)
    nothing.submissions = 0
    assert "NOT MET" in summary_lines([nothing])[0] and summary_lines([nothing])[-1].startswith("NO submission")


@pytest.mark.slow
@pytest.mark.parametrize("database, step", [("sqlite", "combined"),
                                            pytest.param("postgres", "separate", marks=pytest.mark.postgres)])
def test_a_short_real_run(database, step, request, monkeypatch, capsys):
    if database == "postgres":
        monkeypatch.setenv("TEST_POSTGRES_URL", request.getfixturevalue("postgres_server"))
    code = annotators_http.main(["--annotators", "4", "--processes", "2", "--duration", "4", "--think-s", "0.5",
                                 "--databases", database, "--server-workers", "2", "--solo-steps", "10",
                                 "--step", step])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "p95 human pace = " in out and f"({database}, 4 annotators" in out
    assert "no-think throughput / HTTP bound = " in out
    assert "0 lost and 0 duplicated in every run: yes" in out
    # Every run labelled something (a run where nothing got through is clean but measures nothing).
    counts = [int(n) for n in re.findall(r"^# .+ proc: (\d+) submissions", out, flags=re.MULTILINE)]
    assert len(counts) == 2 and min(counts) > 0, out
