"""Graders (string, numeric, regex, similarity, python in a sandboxed child, multi formulas),
the TRL reward adapter, and grading items into labels on SQLite and Postgres."""
from __future__ import annotations

import math
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from db.engine import session_scope
from db.models import AuditLog, Item, Job, Label, Prompt, Response
from feedback import jobs
from feedback.actors import CLI
from feedback.errors import UserError
from feedback.policies import ensure_base_policy
from feedback.projects import default_project
from feedback.prompts import canonical_messages, content_hash
from judges.graders import (
    GRADERS,
    Grader,
    GraderError,
    MultiGrader,
    as_reward_func,
    completion_text,
    extract_number,
    normalize_answer,
    parse_grader,
)
from judges.grading import grade_items, run_grading, submission_id_for
from judges.python_grader import PythonGrader

BUILTIN_SPECS = ["exact", "normalized", "numeric", "numeric:tol=0.01", "similarity", "similarity:metric=token_set",
                 "similarity:metric=bleu", "similarity:metric=chrf", "multi:0.7*numeric+0.3*similarity"]


def grade(spec: str, answer: str, reference: str) -> float:
    return parse_grader(spec).grade(answer, reference)


# --- fakes, registered through the real registry ---------------------------------------------


class KeywordGrader:
    """1 if the answer contains the word 'good'; fails (GraderError) on answers saying 'explode'."""

    name = spec = "keyword"
    delay = 0.0

    def grade(self, answer: str, reference: str) -> float:
        time.sleep(self.delay)
        if "explode" in answer:
            raise GraderError("keyword: cannot grade an explosion")
        return float("good" in answer)


class SlowKeywordGrader(KeywordGrader):
    name = spec = "slowkeyword"
    delay = 0.02  # long enough for two concurrent runs to overlap


class BrokenGrader:
    name = spec = "broken"

    def grade(self, answer: str, reference: str) -> float:
        raise GraderError("broken: always fails")


@pytest.fixture
def fake_graders(registered):
    """Fakes registered through the real registry for one test; the registry is restored afterwards."""
    for name, cls in {"keyword": KeywordGrader, "slowkeyword": SlowKeywordGrader, "broken": BrokenGrader}.items():
        registered(GRADERS, name, lambda arg, cls=cls: cls())


# --- string checks ---------------------------------------------------------------------------


def test_exact_ignores_only_outer_whitespace():
    assert grade("exact", "Paris\n", "Paris") == 1.0
    assert grade("exact", "paris", "Paris") == 0.0
    assert grade("exact", "Paris.", "Paris") == 0.0


@pytest.mark.parametrize("answer, reference, expected", [
    ("The Eiffel Tower!", "eiffel   tower", 1.0),
    ("Paris, France.", "paris france", 1.0),
    ("an apple", "Apple", 1.0),
    ("«Straße»", "straße", 1.0),  # Unicode punctuation and casefold
    ("theory", "ory", 0.0),  # articles only as whole words
    ("Lyon", "Paris", 0.0),
])
def test_normalized_is_squad_style(answer, reference, expected):
    assert grade("normalized", answer, reference) == expected


def test_normalize_answer():
    assert normalize_answer("  The  Quick, brown fox! ") == "quick brown fox"


# --- numeric ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("#### 1,234", 1234.0),
    ("Janet has 3 eggs and 4 more... so 7 in all.\n#### 7", 7.0),
    ("-3.5", -3.5),
    ("3/4", 0.75),
    ("The answer is -12.", -12.0),
    ("Answer: $1,000,000.50 total, not 3", 1000000.5),
    ("so x = \\boxed{42} (checked 41 and 43)", 42.0),
    ("first 10, then 20, finally 30", 30.0),
    ("5-3", 3.0),  # an operator, not a negative 3
    ("\u22127 degrees", -7.0),  # typographic minus
    ("1e-05", 1e-05),
    (".5 of it", 0.5),
    ("1,2345", 2345.0),  # not a thousands separator
    ("no number here", None),
    ("divide by 1/0", None),  # a zero denominator makes no number
])
def test_extract_number(text, value):
    assert extract_number(text) == value


def test_numeric_grader_on_gsm8k_style_answers():
    reference = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether.\n#### 72"
    assert grade("numeric", "She sold 72 clips in total.", reference) == 1.0
    assert grade("numeric", "So the answer is 72, not 24.", reference) == 1.0
    assert grade("numeric", "She sold 24 clips.", reference) == 0.0
    assert grade("numeric", "#### 1,234", "1234") == 1.0
    assert grade("numeric", "3/4", "0.75") == 1.0
    assert grade("numeric", "-3.5", "-3.50") == 1.0
    assert grade("numeric", "I have no idea.", "42") == 0.0


def test_numeric_tolerance_is_relative_or_absolute():
    assert grade("numeric", "42.1", "42") == 0.0
    assert grade("numeric:tol=0.01", "100.5", "100") == 1.0  # relative
    assert grade("numeric:tol=0.01", "0.005", "0") == 1.0  # absolute
    assert grade("numeric:tol=0.01", "103", "100") == 0.0
    assert grade("numeric", "0.30000000000000004", "0.3") == 1.0


def test_numeric_reference_without_number_is_an_error_not_a_zero():
    with pytest.raises(GraderError, match="reference has no number"):
        grade("numeric", "42", "forty-two")


# --- regex and similarity --------------------------------------------------------------------


def test_regex_searches_the_answer():
    assert grade("regex:\\b(yes|no)\\b", "I'd say yes.", "ignored") == 1.0
    assert grade("regex:^yes", "well, yes", "") == 0.0
    assert grade("regex:(?i)^YES", "yes!", "") == 1.0
    g = parse_grader("regex:time: \\d+:\\d+")  # colons after the first belong to the pattern
    assert g.spec == "regex:time: \\d+:\\d+" and g.grade("time: 10:30", "") == 1.0


@pytest.mark.parametrize("spec", ["regex:(unclosed", "regex:", "regex:*"])
def test_regex_invalid_patterns_are_user_errors(spec):
    with pytest.raises(UserError):
        parse_grader(spec)


@pytest.mark.parametrize("metric", ["ratio", "token_set", "bleu", "chrf"])
def test_similarity_metrics(metric):
    g = parse_grader(f"similarity:metric={metric}")
    same = g.grade("the cat sat on the mat", "the cat sat on the mat")
    close = g.grade("the cat sat on a rug", "the cat sat on the mat")
    far = g.grade("quantum chromodynamics", "the cat sat on the mat")
    assert same == 1.0  # BLEU's 100.00000000000004 is clipped
    assert 0.0 <= far < close < 1.0


def test_token_set_ignores_word_order():
    assert grade("similarity:metric=token_set", "mat the on sat cat the", "the cat sat on the mat") == 1.0


# --- specs and the registry ------------------------------------------------------------------


@pytest.mark.parametrize("spec", BUILTIN_SPECS)
def test_spec_recreates_the_grader(spec):
    g = parse_grader(spec)
    assert isinstance(g, Grader)
    assert parse_grader(g.spec).spec == g.spec
    assert g.name == spec.split(":")[0]


def test_specs_are_canonical():
    assert parse_grader("similarity:metric=ratio").spec == "similarity"
    assert parse_grader("numeric:tol=1e-6").spec == "numeric"
    assert parse_grader(" numeric : tol = 0.5").spec == "numeric:tol=0.5"
    assert (parse_grader("multi:0.7*numeric+0.3*similarity").spec
            == parse_grader("multi: 0.7 * numeric + 0.3*similarity").spec)


@pytest.mark.parametrize("spec, message", [
    ("nope", "Unknown grader 'nope'"),
    ("numeric:tolerance=1", "unknown option"),
    ("numeric:tol=abc", "bad value"),
    ("numeric:tol=-1", "tol must be"),
    ("similarity:metric=rouge", "metric must be one of"),
    ("exact:strict", "takes no options"),
])
def test_bad_specs_are_user_errors(spec, message):
    with pytest.raises(UserError, match=message):
        parse_grader(spec)


def test_registered_fake_is_a_grader_everywhere(fake_graders):
    assert parse_grader("keyword").grade("a good answer", "") == 1.0
    assert parse_grader("multi:max(keyword, exact)").grade("x", "x") == 1.0
    with pytest.raises(ValueError):
        GRADERS.register("not-an-identifier", KeywordGrader)
    assert "not-an-identifier" not in GRADERS


def test_fakes_do_not_outlive_their_test():
    assert "keyword" not in GRADERS and "python" in GRADERS


# --- multi -----------------------------------------------------------------------------------


def test_multi_weights_and_clips():
    reference = "#### 42"
    g = parse_grader("multi:0.7*numeric+0.3*similarity")
    assert g.grade("#### 42", reference) == pytest.approx(1.0)
    assert g.grade("42", reference) == pytest.approx(0.7 + 0.3 * grade("similarity", "42", reference))
    assert grade("multi:2*exact", "a", "a") == 1.0  # clipped from 2
    assert grade("multi:exact - 1", "a", "b") == 0.0  # clipped from -1
    assert grade("multi:min(exact, normalized) + abs(-0.25)", "The Cat", "cat") == 0.25
    assert grade("multi:numeric if exact else 0.5", "x", "#### 1") == 0.5  # conditionals are allowed


@pytest.mark.parametrize("formula, message", [
    ("0.5*unknown", "unknown grader"),
    ("exact.__class__", "cannot evaluate"),
    ("open('x')", "unknown grader"),
    ("exact(1)", "cannot evaluate"),
    ("'a' + exact", "cannot evaluate"),
    ("0.5", "uses no grader"),
    ("exact +", "cannot parse"),
    ("regex", "needs a pattern"),  # named graders run with defaults; regex has none
    ("multi", "cannot nest"),
])
def test_multi_rejects_bad_formulas_when_parsed(formula, message):
    with pytest.raises(UserError, match=message):
        parse_grader(f"multi:{formula}")


def test_multi_division_by_zero_is_a_grader_error():
    g = parse_grader("multi:numeric / exact")
    with pytest.raises(GraderError, match="ZeroDivisionError"):
        g.grade("7", "#### 7")  # exact is 0 here


# --- property tests --------------------------------------------------------------------------

texts = st.text(max_size=60)


@settings(max_examples=150, deadline=None)
@given(answer=texts, reference=texts, spec=st.sampled_from(BUILTIN_SPECS))
def test_scores_are_always_within_0_and_1(answer, reference, spec):
    try:
        score = grade(spec, answer, reference)
    except GraderError:
        assert "numeric" in spec and extract_number(reference) is None
        return
    assert isinstance(score, float) and 0.0 <= score <= 1.0


@given(texts)
def test_exact_and_normalized_accept_themselves(x):
    assert grade("exact", x, x) == 1.0
    assert grade("normalized", x, x) == 1.0
    assert grade("similarity", x, x) == 1.0


@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
def test_numeric_accepts_any_number_written_as_itself(n):
    assert grade("numeric", str(n), str(n)) == 1.0
    assert grade("numeric", f"Step 1 gives 3, step 2 gives 5.\n#### {n}", str(n)) == 1.0


@given(st.integers(min_value=-10**5, max_value=10**5))  # off by one stays outside the 1e-6 tolerance
def test_numeric_reads_thousands_separators(n):
    assert grade("numeric", f"#### {n:,}", str(n)) == 1.0
    assert grade("numeric", f"The answer is {n + 1:,}", str(n)) == 0.0


@given(a=texts, b=texts)
def test_similarity_is_symmetric_where_the_metric_is(a, b):
    for metric in ("ratio", "token_set"):
        g = parse_grader(f"similarity:metric={metric}")
        assert g.grade(a, b) == pytest.approx(g.grade(b, a))
    for metric in ("bleu", "chrf"):  # not symmetric, but bounded either way round
        g = parse_grader(f"similarity:metric={metric}")
        assert 0.0 <= g.grade(a, b) <= 1.0 and 0.0 <= g.grade(b, a) <= 1.0


weights = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(deadline=None)
@given(w1=weights, w2=weights, c=weights, answer=texts, reference=texts)
def test_multi_formulas_are_clipped(w1, w2, c, answer, reference):
    g = parse_grader(f"multi:{w1!r}*exact + {w2!r}*similarity + {c!r}")
    assert 0.0 <= g.grade(answer, reference) <= 1.0


# --- python graders: a child process with time, memory and environment limits ----------------


def write_grader(tmp_path: Path, body: str, name: str = "grader.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a killed, not yet reaped process is no leftover


def test_python_grader_scores_and_ignores_prints(tmp_path):
    path = write_grader(tmp_path, """
        import sys
        def grade(answer, reference):
            print("debug output on stdout does not break the protocol")
            sys.stdout.flush()
            return 1.0 if answer.strip() == reference.strip() else 0.25
    """)
    g = parse_grader(f"python:{path}")
    assert g.grade("42 ", "42") == 1.0
    assert g.grade("41", "42") == 0.25
    assert g.grade("ünïcödé ✓", "ünïcödé ✓") == 1.0
    assert g.spec == f"python:{path.resolve()}"
    assert parse_grader(f"python:{path};timeout=2").spec == f"python:{path.resolve()};timeout=2"
    assert len(g.describe()["source_sha256"]) == 64


def test_python_grader_can_import_helpers_next_to_it(tmp_path):
    write_grader(tmp_path, "def clean(s):\n    return s.strip().lower()\n", name="helpers.py")
    path = write_grader(tmp_path, """
        from helpers import clean
        def grade(answer, reference):
            return float(clean(answer) == clean(reference))
    """)
    assert parse_grader(f"python:{path}").grade(" YES", "yes") == 1.0


def test_python_grader_that_hangs_is_killed_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    path = write_grader(tmp_path, f"""
        import os, subprocess, sys, time
        def grade(answer, reference):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            with open({str(pids)!r}, "w") as f:
                f.write(f"{{os.getpid()}} {{child.pid}}")
            while True:
                time.sleep(1)
    """)
    g = parse_grader(f"python:{path};timeout=1")
    start = time.monotonic()
    with pytest.raises(GraderError, match="timed out after 1 s"):
        g.grade("a", "b")
    assert time.monotonic() - start < 1 + 2
    grader_pid, grandchild_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 2
    while (_alive(grader_pid) or _alive(grandchild_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grader_pid) and not _alive(grandchild_pid)


def test_python_grader_cannot_take_2_gb(tmp_path):
    path = write_grader(tmp_path, """
        def grade(answer, reference):
            hog = bytearray(2 * 1024 ** 3)
            return 1.0
    """)
    with pytest.raises(GraderError, match="ran out of memory \\(limit 512 MB\\)"):
        parse_grader(f"python:{path}").grade("a", "b")


def test_python_grader_sees_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-secret")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:password@db/app")
    path = write_grader(tmp_path, """
        import os
        def grade(answer, reference):
            leaked = "ANTHROPIC_API_KEY" in os.environ or "DATABASE_URL" in os.environ
            return 0.0 if leaked else 1.0
    """)
    assert parse_grader(f"python:{path}").grade("a", "b") == 1.0


@pytest.mark.parametrize("body, message", [
    ("def grade(a, r):\n    raise ValueError('bad input ' + a)\n", "ValueError: bad input x"),
    ("def grade(a, r):\n    return 'high'\n", "returned str 'high', not a number"),
    ("def grade(a, r):\n    return 1.5\n", "outside \\[0, 1\\]"),
    ("def grade(a, r):\n    return float('nan')\n", "not a finite number"),
    ("def grade(a, r):\n    return None\n", "not a number"),
    ("import sys\ndef grade(a, r):\n    sys.exit(3)\n", "SystemExit"),
    ("import os\ndef grade(a, r):\n    os._exit(0)\n", "exited with code 0 without a result"),
    ("grade = 3\n", "grade is not a function"),
])
def test_python_grader_failures_are_grader_errors(tmp_path, body, message):
    path = write_grader(tmp_path, body)
    with pytest.raises(GraderError, match=message):
        parse_grader(f"python:{path}").grade("x", "y")


def test_python_grader_returning_a_bool_means_0_or_1(tmp_path):
    path = write_grader(tmp_path, "def grade(a, r):\n    return a == r\n")
    g = parse_grader(f"python:{path}")
    assert (g.grade("x", "x"), g.grade("x", "y")) == (1.0, 0.0)


@pytest.mark.parametrize("body, options, message", [
    ("def grade(a, r)\n    return 1\n", "", "line 1"),
    ("def score(a, r):\n    return 1\n", "", "defines no top-level grade"),
    ("def grade(a, r):\n    return 1\n", ";timeout=0", "timeout must be"),
    ("def grade(a, r):\n    return 1\n", ";memory_mb=1", "memory_mb must be"),
    ("def grade(a, r):\n    return 1\n", ";cpu=1", "unknown option"),
])
def test_broken_python_grader_files_fail_when_parsed(tmp_path, body, options, message):
    path = write_grader(tmp_path, body)
    with pytest.raises(UserError, match=message):
        parse_grader(f"python:{path}{options}")


def test_missing_python_grader_file(tmp_path):
    with pytest.raises(UserError, match="cannot read grader file"):
        parse_grader(f"python:{tmp_path / 'missing.py'}")
    with pytest.raises(UserError, match="needs a file"):
        parse_grader("python:")


# --- TRL reward functions --------------------------------------------------------------------


def test_reward_func_on_string_completions():
    reward = as_reward_func(parse_grader("numeric"))
    assert reward.__name__ == "grader_numeric"
    scores = reward(prompts=["q1", "q2", "q3"], completions=["#### 4", "it is 5", "no idea"],
                    reference=["4", "#### 4", "1"], completion_ids=[[1], [2], [3]], trainer_state=None)
    assert scores == [1.0, 0.0, 0.0]


def test_reward_func_on_conversational_completions():
    reward = as_reward_func(parse_grader("normalized"))
    prompts = [[{"role": "user", "content": "Capital of France?"}]] * 3
    completions = [
        [{"role": "assistant", "content": "Paris."}],
        [{"role": "assistant", "content": "Lyon"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "The "}, {"type": "text", "text": "paris"}]}],
    ]
    assert reward(prompts, completions, reference=["paris"] * 3) == [1.0, 0.0, 1.0]


def test_reward_func_errors_and_missing_references():
    reward = as_reward_func(parse_grader("numeric"), on_error=None)
    # A reference without a number and a missing reference are "not applicable" (None) for TRL.
    assert reward(["p"] * 3, ["1", "2", "3"], reference=["one", None, "3"]) == [None, None, 1.0]
    assert as_reward_func(parse_grader("numeric"))(["p"], ["1"], reference=["one"]) == [0.0]
    with pytest.raises(UserError, match="needs a 'reference' column"):
        reward(["p"], ["1"])
    with pytest.raises(UserError, match="2 completions but 1 references"):
        reward(["p", "p"], ["1", "2"], reference=["1"])


def test_completion_text():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "t"},
                            {"role": "assistant", "content": "final"}]) == "final"
    assert completion_text([]) == ""


# --- grading items into labels (SQLite and Postgres) -----------------------------------------


def _prompt(s, text: str, reference: str | None) -> Prompt:
    messages = canonical_messages(text, None)
    prompt = Prompt(text=text, messages=messages, reference=reference, source="test",
                    content_hash=content_hash(messages))
    s.add(prompt)
    s.flush()
    return prompt


def _responses(s, prompt: Prompt, version, *texts: str) -> list[Response]:
    rows = [Response(prompt_id=prompt.id, policy_version_id=version.id, text=t) for t in texts]
    s.add_all(rows)
    s.flush()
    return rows


def _item(s, prompt: Prompt, a: Response, b: Response | None = None) -> int:
    kind = "pair" if b else "single"
    item = Item(kind=kind, project_id=default_project(session=s, kind=kind).id, prompt_id=prompt.id, response_a_id=a.id,
                response_b_id=b.id if b else None)
    s.add(item)
    s.flush()
    return item.id


@pytest.fixture
def world(engine):
    """Items whose expected grades under `numeric` are known; returns their ids by name."""
    with session_scope(engine) as s:
        v0 = ensure_base_policy(session=s, actor=CLI)
        math_q = _prompt(s, "What is 6 times 7?", "6*7 = 42\n#### 42")
        right, wrong, gsm = _responses(s, math_q, v0, "The answer is 42.", "I think it is 41.", "6*7\n#### 42")
        seven = _prompt(s, "How many days in a week?", "7")
        r7a, r7b = _responses(s, seven, v0, "7", "There are 7 days.")
        free = _prompt(s, "Write a poem.", None)
        p1, p2 = _responses(s, free, v0, "Roses...", "Violets...")
        blank = _prompt(s, "Blank reference", "   ")
        (bl,) = _responses(s, blank, v0, "whatever")
        return {
            "a_wins": _item(s, math_q, right, wrong),
            "b_wins": _item(s, math_q, wrong, gsm),
            "tie": _item(s, seven, r7a, r7b),
            "single_right": _item(s, math_q, right),
            "single_wrong": _item(s, math_q, wrong),
            "no_ref_pair": _item(s, free, p1, p2),
            "no_ref_single": _item(s, free, p1),
            "blank_ref_single": _item(s, blank, bl),
        }


def _labels(engine) -> dict[int, Label]:
    with session_scope(engine, read_only=True) as s:
        return {label.item_id: label for label in s.scalars(select(Label))}


def test_run_grading_labels_pairs_and_singles(engine, world):
    progress = []
    result = run_grading(engine=engine, spec="numeric", on_progress=lambda done, total: progress.append((done, total)),
                         actor=CLI)
    assert {k: result[k] for k in ("items", "pairs", "singles", "ties", "skipped_no_reference", "errors")} == \
        {"items": 5, "pairs": 3, "singles": 2, "ties": 1, "skipped_no_reference": 3, "errors": 0}
    assert progress[0] == (0, 5) and progress[-1] == (5, 5)

    labels = _labels(engine)
    assert set(labels) == {world[k] for k in ("a_wins", "b_wins", "tie", "single_right", "single_wrong")}
    assert labels[world["a_wins"]].choice == "a"
    assert labels[world["b_wins"]].choice == "b"
    assert labels[world["tie"]].choice == "tie"
    assert (labels[world["single_right"]].kind, labels[world["single_right"]].score) == ("score", 1.0)
    assert labels[world["single_wrong"]].score == 0.0

    pair = labels[world["a_wins"]]
    assert (pair.kind, pair.source, pair.producer, pair.user_id) == ("pairwise", "grader", "grader:numeric", None)
    assert pair.provenance["grader"] == "numeric"
    assert pair.provenance["scores"] == {"a": 1.0, "b": 0.0}
    assert set(pair.provenance["response_ids"]) == {"a", "b"}
    assert pair.submission_id == submission_id_for(parse_grader("numeric"), world["a_wins"])
    assert len(pair.submission_id) == 64
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "grader.label")) == 1


def test_regrading_is_idempotent_and_other_graders_label_separately(engine, world):
    run_grading(engine=engine, spec="numeric", actor=CLI)
    again = run_grading(engine=engine, spec="numeric", actor=CLI)
    assert (again["items"], again["skipped_no_reference"]) == (0, 3)
    # The same grader spelled differently is the same producer.
    assert run_grading(engine=engine, spec="numeric:tol=0.000001", actor=CLI)["items"] == 0
    other = run_grading(engine=engine, spec="similarity:metric=chrf", actor=CLI)
    assert other["items"] == 5
    with session_scope(engine, read_only=True) as s:
        producers = dict(s.execute(select(Label.producer, func.count()).group_by(Label.producer)).all())
    assert producers == {"grader:numeric": 5, "grader:similarity:metric=chrf": 5}


def test_grade_items_in_a_session_with_limit_and_item_ids(engine, world):
    grader = parse_grader("numeric")
    with session_scope(engine) as s:
        summary = grade_items(session=s, grader=grader, item_ids=[world["tie"], world["no_ref_pair"]])
    assert (summary.items, summary.ties, summary.skipped_no_reference) == (1, 1, 1)
    with session_scope(engine) as s:
        summary = grade_items(session=s, grader=grader, limit=2)
    assert summary.items == 2
    with session_scope(engine) as s:
        summary = grade_items(session=s, grader=grader)
    assert summary.items == 2  # the five with a reference, in three calls
    with session_scope(engine) as s:
        assert grade_items(session=s, grader=grader).items == 0


def test_run_grading_limit(engine, world):
    assert run_grading(engine=engine, spec="numeric", limit=2, actor=CLI)["items"] == 2
    assert run_grading(engine=engine, spec="numeric", limit=10, actor=CLI)["items"] == 3
    with pytest.raises(UserError):
        run_grading(engine=engine, spec="numeric", limit=0, actor=CLI)


def test_items_the_grader_fails_on_stay_unlabelled_and_are_retried(engine, fake_graders):
    with session_scope(engine) as s:
        v0 = ensure_base_policy(session=s, actor=CLI)
        p = _prompt(s, "Be good.", "good")
        good, bad, boom = _responses(s, p, v0, "good answer", "bad answer", "explode")
        ok_item, boom_item = _item(s, p, good, bad), _item(s, p, boom)
    result = run_grading(engine=engine, spec="keyword", actor=CLI)
    assert (result["items"], result["errors"]) == (1, 1)
    assert result["error_examples"] == [f"item {boom_item}: keyword: cannot grade an explosion"]
    assert set(_labels(engine)) == {ok_item}
    # Retried on the next run; when all a run tried failed, the run fails and says why.
    with pytest.raises(UserError, match="failed on all 1 items.*explosion"):
        run_grading(engine=engine, spec="keyword", actor=CLI)
    assert set(_labels(engine)) == {ok_item}


def test_a_grader_that_fails_everywhere_fails_the_run(engine, world, fake_graders):
    with pytest.raises(UserError, match="failed on all 5 items"):
        run_grading(engine=engine, spec="broken", actor=CLI)
    assert _labels(engine) == {}


def test_concurrent_runs_label_each_item_once(engine, world, fake_graders):
    results = []

    def run():
        results.append(run_grading(engine=engine, spec="slowkeyword", actor=CLI))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["items"] for r in results) == 5
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Label)) == 5


def test_python_grader_labels_carry_its_source_hash(engine, world, tmp_path):
    path = write_grader(tmp_path, "def grade(a, r):\n    return 1.0 if '42' in a else 0.0\n")
    result = run_grading(engine=engine, spec=f"python:{path};timeout=3", actor=CLI)
    assert (result["items"], result["spec"]) == (5, f"python:{path.resolve()};timeout=3")
    label = _labels(engine)[world["a_wins"]]
    assert label.choice == "a"
    assert label.provenance["source_sha256"] == PythonGrader(path).source_sha256


def test_grading_as_a_job(engine, world):
    with session_scope(engine) as s:
        job = jobs.create_job(session=s, kind="grade", config={"spec": "numeric", "limit": 4}, actor=CLI)
    finished = jobs.run_job(engine=engine, job_id=job.id)
    assert finished.status == "succeeded", finished.error
    assert finished.result["items"] == 4 and finished.progress_done == 4
    label = next(iter(_labels(engine).values()))
    assert label.provenance["job_id"] == job.id

    # A bad spec is refused at the door: no job row, no worker.
    with pytest.raises(UserError, match="Unknown grader 'nope'"), session_scope(engine) as s:
        jobs.create_job(session=s, kind="grade", config={"spec": "nope"}, actor=CLI)
    with session_scope(engine, read_only=True) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1


def test_multi_grader_for_math_ranks_exact_matches_first():
    g = MultiGrader("0.7*numeric + 0.3*similarity")
    reference = "#### 42"
    assert g.grade("#### 42", reference) > g.grade("The answer is 42", reference) > g.grade("#### 41", reference)
    assert math.isclose(g.grade("#### 41", reference), 0.3 * grade("similarity", "#### 41", reference))
