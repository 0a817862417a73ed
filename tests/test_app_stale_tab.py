"""A tab left open on a labelling page after its user was signed out elsewhere, deactivated or
given a new password: its next click writes nothing, and nothing it still holds in memory (the
user as the page loaded it) is written back over the account."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from db.engine import session_scope
from db.models import Label, User
from feedback.actors import CLI
from feedback.policies import ensure_base_policy
from feedback.sessions import revoke_sessions
from feedback.settings import PROJECT_ROOT
from feedback.users import authenticate, create_user, reset_password, set_active
from testkit.factories import make_items, set_queue

APP = str(PROJECT_ROOT / "app.py")


@pytest.fixture
def app_db(use_db, engine):
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        create_user(session=s, username="root", role="admin", password="admin-password", actor=CLI)
        create_user(session=s, username="ann", role="annotator", password="annotator-pw", actor=CLI)
        make_items(s, pairs=3)
        set_queue(s, kind="pair", overlap=1, refill_below=0)
    return engine


def on_compare() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input("ann")
    at.text_input[1].input("annotator-pw")
    at.button[0].click().run()
    at.switch_page("pages/annotate_pairwise.py").run()
    assert any(b.label == "A is better" for b in at.button)
    return at


def vote(at: AppTest) -> None:
    at.button(key=next(b.key for b in at.button if b.label == "A is better")).click().run()
    assert not at.exception


def labels(engine) -> int:
    with session_scope(engine, read_only=True) as s:
        return s.scalar(select(func.count()).select_from(Label))


def test_deactivated_and_reset_account_stays_so(app_db):
    at = on_compare()
    with session_scope(app_db) as s:
        ann = s.scalar(select(User).where(User.username == "ann"))
        new_password = reset_password(session=s, actor=CLI, user_id=ann.id)
        set_active(session=s, actor=CLI, user_id=ann.id, active=False)
    vote(at)
    assert labels(app_db) == 0
    with session_scope(app_db, read_only=True) as s:
        ann = s.scalar(select(User).where(User.username == "ann"))
        assert ann.active is False  # a merge of the page's old User object would have set it back
    with session_scope(app_db) as s:
        set_active(session=s, actor=CLI, user_id=ann.id, active=True)
    with session_scope(app_db) as s:
        assert authenticate(session=s, username="ann", password="annotator-pw") is None
        assert authenticate(session=s, username="ann", password=new_password) is not None


def test_signed_out_elsewhere_writes_nothing(app_db):
    at = on_compare()
    with session_scope(app_db) as s:
        ann_id = s.scalar(select(User.id).where(User.username == "ann"))
        revoke_sessions(session=s, user_id=ann_id, reason="sign-out")
    vote(at)
    assert labels(app_db) == 0
    assert at.subheader and at.subheader[0].value == "Sign in"  # the tab shows the sign-in page
