"""The table of job kinds: which module runs each kind of job. It lives here, above every
package, because only the composition root may know them all (the core's job machinery looks a
kind up in feedback.jobs.JOB_KINDS and never imports judges/ or training/ itself).

Each entry is imported on first use, so a worker for a sampling job never loads the trainers.
Every entry point (the CLI and its workers, app.py, the tests) calls `install()` once.
"""
from __future__ import annotations

from feedback.jobs import JOB_KINDS

KINDS = {
    "sample": "feedback.sampling:SAMPLE_JOB",
    "judge": "judges.batch:JUDGE_JOB",
    "grade": "judges.grading:GRADE_JOB",
    "train": "training.rounds:TRAIN_JOB",
    "reft": "training.reft:REFT_JOB",
    "loop": "training.loop:LOOP_JOB",
}


def install() -> None:
    """Register every kind (idempotent; an entry a test overrode stays overridden)."""
    for kind, path in KINDS.items():
        if kind not in JOB_KINDS:
            JOB_KINDS.register_lazy(kind, path)
