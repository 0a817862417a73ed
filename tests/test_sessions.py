"""Browser sessions (feedback/sessions.py) on SQLite and Postgres: the one-time ticket, expiry,
revocation on sign-out / password reset / deactivation / role change, the per-client sign-in
limit (IPv6 clients by /64, SIGN_IN_CLIENT_LIMIT); the cookie routes through Starlette's
TestClient (where a request comes from, a second sign-in replacing the browser's session); and,
in AppTest, the ticket image, sign-out (single sign-on too) and a role change reaching an open
tab. Deep links and two tabs: tests/test_browser_sessions.py."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest

from api.server import api_routes
from db.engine import session_scope
from db.models import SignInFailure, User, UserSession, utcnow
from feedback.actors import CLI, Actor
from feedback.policies import ensure_base_policy
from feedback.sessions import (
    COOKIE_NAME,
    TICKET_SECONDS,
    TOUCH_EVERY,
    claim_ticket,
    end_browser_sessions,
    end_session,
    start_session,
    touch_session,
    user_for_session_id,
    user_for_token,
)
from feedback.settings import PROJECT_ROOT, Settings
from feedback.users import (
    FAILURE_WINDOW,
    MAX_FAILURES,
    TooManyAttempts,
    client_key,
    create_user,
    reset_password,
    set_active,
    set_password,
    set_role,
    sign_in,
)
from testkit.factories import set_queue

APP = str(PROJECT_ROOT / "app.py")
MAX_CLIENT_FAILURES = Settings.model_fields["sign_in_client_limit"].default
T0 = utcnow().replace(microsecond=0)


@pytest.fixture
def users(engine) -> dict[str, int]:
    with session_scope(engine) as s:
        made = {name: create_user(session=s, username=name, role=role, password=f"{name}-password", actor=CLI)
                for name, role in (("root", "admin"), ("ann", "annotator"), ("rev", "reviewer"))}
        return {name: user.id for name, user in made.items()}


def started(engine, user_id: int, now=T0):
    with session_scope(engine) as s:
        return start_session(session=s, user=s.get(User, user_id), client="10.0.0.1", user_agent="pytest", now=now)


def claimed(engine, ticket: str, now=T0):
    with session_scope(engine) as s:
        return claim_ticket(session=s, ticket=ticket, now=now)


def who(engine, *, token=None, session_id=None, now=T0):
    """The username the cookie's token (or the tab's session id) is signed in as, or None."""
    with session_scope(engine, read_only=True) as s:
        found = (user_for_token(session=s, token=token, now=now) if token is not None
                 else user_for_session_id(session=s, session_id=session_id, now=now))
    return found.user.username if found else None


def admin(engine, users) -> Actor:
    with session_scope(engine, read_only=True) as s:
        return Actor.signed_in(s.get(User, users["root"]))


# ------------------------------------------------------------------------------ the service


def test_a_ticket_is_traded_for_a_token_once(engine, users):
    new = started(engine, users["ann"])
    assert who(engine, session_id=new.session_id) == "ann"  # the tab works before its cookie is set
    cookie = claimed(engine, new.ticket, T0 + timedelta(seconds=5))
    assert cookie is not None and cookie.max_age_s == pytest.approx(14 * 86400 - 5, abs=1)
    assert claimed(engine, new.ticket, T0 + timedelta(seconds=6)) is None  # used
    assert claimed(engine, "made-up", T0) is None
    assert who(engine, token=cookie.token) == "ann"
    assert who(engine, token="made-up") is None
    with session_scope(engine, read_only=True) as s:
        row = s.get(UserSession, new.session_id)
        stored = [str(v) for v in (row.token_hash, row.ticket_hash, row.client, row.user_agent)]
    assert row.ticket_hash is None and row.token_hash and (row.client, row.user_agent) == ("10.0.0.1", "pytest")
    assert not any(secret in value for value in stored for secret in (cookie.token, new.ticket))  # hashes only


def test_tickets_and_sessions_expire(engine, users, monkeypatch):
    late = started(engine, users["ann"])
    assert claimed(engine, late.ticket, T0 + timedelta(seconds=TICKET_SECONDS)) is None
    monkeypatch.setenv("SESSION_DAYS", "2")  # read when a session starts
    new = started(engine, users["ann"])
    cookie = claimed(engine, new.ticket)
    assert cookie.max_age_s == 2 * 86400
    assert who(engine, token=cookie.token, now=T0 + timedelta(days=2) - timedelta(seconds=1)) == "ann"
    assert who(engine, token=cookie.token, now=T0 + timedelta(days=2)) is None
    assert who(engine, session_id=new.session_id, now=T0 + timedelta(days=2)) is None


def test_sign_out_ends_only_that_session(engine, users):
    first, second = started(engine, users["ann"]), started(engine, users["ann"])
    token = claimed(engine, first.ticket).token
    with session_scope(engine) as s:
        assert end_session(session=s, session_id=first.session_id)
        assert not end_session(session=s, session_id=first.session_id)  # already ended
    assert who(engine, token=token) is None and who(engine, session_id=first.session_id) is None
    assert who(engine, session_id=second.session_id) == "ann"
    assert claimed(engine, second.ticket) is not None
    with session_scope(engine, read_only=True) as s:
        assert s.get(UserSession, first.session_id).revoked_reason == "sign-out"


@pytest.mark.parametrize("change, reason", [
    (lambda s, actor, uid: reset_password(session=s, actor=actor, user_id=uid), "password"),
    (lambda s, actor, uid: set_password(session=s, username="ann", password="another-pw", actor=actor), "password"),
    (lambda s, actor, uid: set_active(session=s, actor=actor, user_id=uid, active=False), "deactivated"),
    (lambda s, actor, uid: set_role(session=s, actor=actor, user_id=uid, role="reviewer"), "role"),
])
def test_account_changes_end_all_of_a_users_sessions(engine, users, change, reason):
    cookie = claimed(engine, started(engine, users["ann"]).ticket)
    unclaimed = started(engine, users["ann"])
    others = started(engine, users["rev"])
    with session_scope(engine) as s:
        change(s, admin(engine, users), users["ann"])
    assert who(engine, token=cookie.token) is None and who(engine, session_id=unclaimed.session_id) is None
    assert claimed(engine, unclaimed.ticket) is None  # nor can a pending ticket still be traded
    assert who(engine, session_id=others.session_id) == "rev"
    with session_scope(engine, read_only=True) as s:
        reasons = set(s.scalars(select(UserSession.revoked_reason).where(UserSession.user_id == users["ann"])))
    assert reasons == {reason}


def test_the_same_role_or_a_reactivation_ends_nothing(engine, users):
    new = started(engine, users["ann"])
    with session_scope(engine) as s:
        set_role(session=s, actor=admin(engine, users), user_id=users["ann"], role="annotator")
        set_active(session=s, actor=admin(engine, users), user_id=users["ann"], active=True)
    assert who(engine, session_id=new.session_id) == "ann"


def test_a_deactivated_account_is_signed_out_even_with_a_live_session(engine, users):
    new = started(engine, users["ann"])
    with session_scope(engine) as s:
        s.get(User, users["ann"]).active = False  # not through set_active: the check on reading holds too
    assert who(engine, session_id=new.session_id) is None


def test_last_seen_is_noted_at_most_once_a_minute(engine, users):
    new = started(engine, users["ann"])

    def touch_due(now):
        with session_scope(engine, read_only=True) as s:
            return user_for_session_id(session=s, session_id=new.session_id, now=now).touch_due

    def touch(now):
        with session_scope(engine) as s:
            touch_session(session=s, session_id=new.session_id, now=now)
        with session_scope(engine, read_only=True) as s:
            return s.get(UserSession, new.session_id).last_seen_at

    assert touch_due(T0)
    assert touch(T0) == T0
    assert not touch_due(T0 + timedelta(seconds=30))
    assert touch(T0 + timedelta(seconds=30)) == T0  # a second tab at the same minute writes nothing
    assert touch_due(T0 + TOUCH_EVERY)
    assert touch(T0 + TOUCH_EVERY) == T0 + TOUCH_EVERY


def try_sign_in(engine, username, password, now, client="10.0.0.9"):
    with session_scope(engine) as s:
        user = sign_in(session=s, username=username, password=password, client=client, now=now)
        return user.id if user else None


def test_one_client_trying_many_usernames_is_stopped(engine, users):
    for i in range(MAX_CLIENT_FAILURES):  # a few tries per name: under the per-username limit
        assert try_sign_in(engine, f"guess{i % 5}", "wrong", T0 + timedelta(seconds=i)) is None
    later = T0 + timedelta(seconds=MAX_CLIENT_FAILURES)
    with pytest.raises(TooManyAttempts, match="Too many failed sign-ins"):  # any name, even a right password
        try_sign_in(engine, "ann", "ann-password", later)
    assert try_sign_in(engine, "ann", "ann-password", later, client="10.0.0.10") == users["ann"]  # others are not
    assert try_sign_in(engine, "rev", "rev-password", later, client="") == users["rev"]  # unknown: not one client
    with session_scope(engine, read_only=True) as s:
        assert set(s.scalars(select(SignInFailure.client))) == {"10.0.0.9"}
    assert try_sign_in(engine, "ann", "ann-password", T0 + FAILURE_WINDOW + timedelta(seconds=1)) == users["ann"]


def test_signing_in_to_ones_own_account_does_not_reset_the_clients_count(engine, users):
    for i in range(MAX_CLIENT_FAILURES - 1):
        assert try_sign_in(engine, "ann" if i < 3 else f"other{i % 4}", "wrong", T0 + timedelta(seconds=i)) is None
    assert try_sign_in(engine, "ann", "ann-password", T0 + timedelta(seconds=30)) == users["ann"]
    assert try_sign_in(engine, "rev", "wrong", T0 + timedelta(seconds=31)) is None  # the 20th
    with pytest.raises(TooManyAttempts):
        try_sign_in(engine, "ann", "ann-password", T0 + timedelta(seconds=32))


@pytest.mark.parametrize("address, client", [
    ("10.0.0.9", "10.0.0.9"),
    (" 10.0.0.9 ", "10.0.0.9"),
    ("2001:db8::1", "2001:db8::/64"),
    ("2001:DB8:0:0:ffff:1:2:3", "2001:db8::/64"),  # the same /64, however it is written
    ("2001:db8:0:1::1", "2001:db8:0:1::/64"),  # the next /64: another client
    ("::ffff:10.0.0.9", "10.0.0.9"),  # an IPv4 client on a dual-stack socket
    ("fe80::1%eth0", "fe80::/64"),
    ("not-an-address", "not-an-address"),  # whatever the server saw, as it is
    ("x" * 80, "x" * 64),
    ("", ""),
])
def test_who_counts_as_one_client(address, client):
    assert client_key(address) == client


def test_one_ipv6_64_is_one_client_however_many_addresses_it_uses(engine, users):
    for i in range(MAX_CLIENT_FAILURES):  # a fresh address for every guess
        assert try_sign_in(engine, f"guess{i % 5}", "wrong", T0 + timedelta(seconds=i),
                           client=f"2001:db8::{i + 1:x}") is None
    later = T0 + timedelta(seconds=MAX_CLIENT_FAILURES)
    with pytest.raises(TooManyAttempts):
        try_sign_in(engine, "ann", "ann-password", later, client="2001:db8::ffff:ffff")
    assert try_sign_in(engine, "ann", "ann-password", later, client="2001:db8:0:1::1") == users["ann"]
    with session_scope(engine, read_only=True) as s:
        assert set(s.scalars(select(SignInFailure.client))) == {"2001:db8::/64"}


def test_the_client_limit_is_a_setting_and_0_turns_it_off(engine, users, monkeypatch):
    monkeypatch.setenv("SIGN_IN_CLIENT_LIMIT", "3")
    for i in range(3):
        assert try_sign_in(engine, f"guess{i}", "wrong", T0 + timedelta(seconds=i)) is None
    with pytest.raises(TooManyAttempts):
        try_sign_in(engine, "ann", "ann-password", T0 + timedelta(seconds=3))
    monkeypatch.setenv("SIGN_IN_CLIENT_LIMIT", "0")  # e.g. behind NAT: everyone is one client
    for i in range(3, 3 + 2 * MAX_CLIENT_FAILURES):
        assert try_sign_in(engine, f"guess{i % 10}", "wrong", T0 + timedelta(seconds=i)) is None
    assert try_sign_in(engine, "ann", "ann-password", T0 + timedelta(minutes=2)) == users["ann"]
    for i in range(MAX_FAILURES):  # the per-username limit still holds
        try_sign_in(engine, "rev", "wrong", T0 + timedelta(minutes=3, seconds=i))
    with pytest.raises(TooManyAttempts):
        try_sign_in(engine, "rev", "rev-password", T0 + timedelta(minutes=4))


def test_a_claim_ends_the_session_it_replaces_in_the_browser(engine, users):
    first = claimed(engine, started(engine, users["ann"]).ticket)
    second = started(engine, users["rev"])  # another tab of the same browser signs in
    with session_scope(engine) as s:
        cookie = claim_ticket(session=s, ticket=second.ticket, replacing=first.token, now=T0)
    assert who(engine, token=cookie.token) == "rev"
    assert who(engine, token=first.token) is None
    with session_scope(engine, read_only=True) as s:
        assert {row.revoked_reason for row in s.scalars(select(UserSession))} == {"replaced", None}
    third = started(engine, users["ann"])
    with session_scope(engine) as s:  # a dead or made-up cookie alongside changes nothing
        assert claim_ticket(session=s, ticket=third.ticket, replacing="made-up", now=T0) is not None
    assert who(engine, token=cookie.token) == "rev"
    unused = started(engine, users["ann"])
    with session_scope(engine) as s:  # nor does a refused claim end the cookie's session
        assert claim_ticket(session=s, ticket=unused.ticket, replacing=cookie.token,
                            now=T0 + timedelta(seconds=TICKET_SECONDS)) is None
    assert who(engine, token=cookie.token) == "rev"


def test_sign_out_ends_the_tabs_session_and_the_cookies(engine, users):
    in_cookie = started(engine, users["ann"])
    token = claimed(engine, in_cookie.ticket).token
    tab = started(engine, users["ann"])  # this tab signed in too; the browser kept the other cookie
    untouched = started(engine, users["ann"])
    with session_scope(engine) as s:
        assert end_browser_sessions(session=s, session_id=tab.session_id, token=token) == 2
    assert who(engine, token=token) is None and who(engine, session_id=tab.session_id) is None
    assert who(engine, session_id=untouched.session_id) == "ann"
    token = claimed(engine, untouched.ticket).token
    with session_scope(engine) as s:  # one session in both: ended once; nothing known: nothing
        assert end_browser_sessions(session=s, session_id=untouched.session_id, token=token) == 1
        assert end_browser_sessions(session=s, session_id=None, token="") == 0


# ------------------------------------------------------------------------------- the routes


OUR_PAGE = {"Sec-Fetch-Site": "same-origin"}  # what Chromium sends with the pages' images


@pytest.fixture
def client(use_db):
    with TestClient(Starlette(routes=api_routes()), headers=OUR_PAGE) as test_client:
        yield test_client


@pytest.fixture
def bare_client(use_db):
    """A client sending no Sec-Fetch-Site (as a browser does over plain http to a remote host)."""
    with TestClient(Starlette(routes=api_routes())) as test_client:
        yield test_client


def set_cookie(response) -> str:
    return response.headers.get("set-cookie", "")


def test_claim_sets_an_http_only_cookie_once(engine, users, client):
    new = started(engine, users["ann"], now=utcnow())
    response = client.get(f"/session/claim?ticket={new.ticket}")
    assert response.status_code == 204 and response.headers["cache-control"] == "no-store"
    header = set_cookie(response)
    token = re.match(rf"{COOKIE_NAME}=([^;]+);", header).group(1)
    assert who(engine, token=token, now=utcnow()) == "ann"
    assert token not in str(response.url) and new.ticket not in token
    assert {"HttpOnly", "Path=/", "SameSite=lax"} <= {part.strip() for part in header.split(";")}
    assert re.search(r"Max-Age=12095\d\d", header) and "Secure" not in header
    again = client.get(f"/session/claim?ticket={new.ticket}")
    assert again.status_code == 404 and not set_cookie(again)


def test_claim_refuses_unknown_expired_and_cross_site_tickets(engine, users, client):
    for ticket in ("", "made-up", started(engine, users["ann"], now=utcnow() - timedelta(minutes=2)).ticket):
        response = client.get(f"/session/claim?ticket={ticket}")
        assert response.status_code == 404 and not set_cookie(response)
    new = started(engine, users["ann"], now=utcnow())
    for site in ("cross-site", "same-site", "none"):
        response = client.get(f"/session/claim?ticket={new.ticket}", headers={"Sec-Fetch-Site": site})
        assert response.status_code == 403 and not set_cookie(response), site
    same_origin = client.get(f"/session/claim?ticket={new.ticket}")
    assert same_origin.status_code == 204  # the refused requests did not use the ticket up


@pytest.mark.parametrize("headers, status", [
    ({}, 403),  # says nothing about where it comes from
    ({"Referer": "http://evil.example/page"}, 403),
    ({"Referer": "http://testserver.evil.example/"}, 403),
    ({"Referer": "http://testserver:8080/label"}, 403),  # another port: another origin
    ({"Referer": "not a url"}, 403),
    ({"Referer": "http://[::1/"}, 403),
    ({"Origin": "null"}, 403),
    ({"Origin": "http://evil.example", "Referer": "http://testserver/label"}, 403),
    ({"Referer": "http://testserver/label?x=1"}, 204),
    ({"Referer": "http://TestServer:80/"}, 204),
    ({"Origin": "http://testserver"}, 204),
    ({"Referer": "http://app.example:8501/home", "Host": "app.example:8501"}, 204),
    ({"Referer": "https://app.example/home", "Host": "app.example"}, 204),  # behind a TLS proxy
])
def test_without_sec_fetch_site_claim_needs_a_referer_or_origin_on_our_host(engine, users, bare_client,
                                                                            headers, status):
    new = started(engine, users["ann"], now=utcnow())
    response = bare_client.get(f"/session/claim?ticket={new.ticket}", headers=headers)
    assert response.status_code == status
    assert bool(set_cookie(response)) == (status == 204)


def test_a_second_sign_in_in_the_browser_ends_the_session_its_cookie_replaces(engine, users, client):
    first = started(engine, users["ann"], now=utcnow())
    assert client.get(f"/session/claim?ticket={first.ticket}").status_code == 204
    old_token = client.cookies[COOKIE_NAME]
    second = started(engine, users["ann"], now=utcnow())  # another tab signed in: a second session
    assert client.get(f"/session/claim?ticket={second.ticket}").status_code == 204  # sent with the old cookie
    assert client.cookies[COOKIE_NAME] != old_token
    assert who(engine, token=old_token, now=utcnow()) is None
    assert who(engine, session_id=first.session_id, now=utcnow()) is None  # the first tab is signed out too
    assert who(engine, token=client.cookies[COOKIE_NAME], now=utcnow()) == "ann"


def test_the_cookie_is_secure_over_https(engine, users, use_db):
    with TestClient(Starlette(routes=api_routes()), base_url="https://testserver", headers=OUR_PAGE) as https:
        response = https.get(f"/session/claim?ticket={started(engine, users['ann'], now=utcnow()).ticket}")
    assert response.status_code == 204 and "Secure" in set_cookie(response)


def test_clear_deletes_the_cookie(client, bare_client):
    response = client.get("/session/clear")
    header = set_cookie(response)
    assert response.status_code == 204
    assert header.startswith(f'{COOKIE_NAME}="";') and "Max-Age=0" in header and "HttpOnly" in header
    assert bare_client.get("/session/clear", headers={"Referer": "http://testserver/"}).status_code == 204


def test_clear_refuses_other_sites(bare_client):
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {},
                    {"Referer": "http://evil.example/"}):
        response = bare_client.get("/session/clear", headers=headers)
        assert response.status_code == 403 and not set_cookie(response), headers


# ---------------------------------------------------------------------------------- AppTest


@pytest.fixture
def app_db(use_db, engine, users):
    with session_scope(engine) as s:
        ensure_base_policy(session=s, actor=CLI)
        set_queue(s, kind="pair", refill_below=0)  # Compare's empty pool would start a sampling job
    return engine


def signed_in(name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input[0].input(name)
    at.text_input[1].input(f"{name}-password")
    at.button[0].click().run()
    assert not at.exception and "session_id" in at.session_state, [e.value for e in at.error]
    return at


def images(at: AppTest) -> list[str]:
    return [re.search(r'src="([^"]+)"', element.proto.body).group(1) for element in at.get("html")]


def test_the_signed_in_tab_hands_its_ticket_to_the_browser(app_db, client):
    at = signed_in("ann")
    [claim] = images(at)
    assert claim.startswith("/session/claim?ticket=")
    token = re.match(rf"{COOKIE_NAME}=([^;]+);", set_cookie(client.get(claim))).group(1)
    assert who(app_db, token=token, now=utcnow()) == "ann"


def test_sign_out_ends_the_session_and_clears_the_cookie(app_db):
    at = signed_in("ann")
    session_id = at.session_state["session_id"]
    next(b for b in at.button if b.label == "Sign out").click().run()
    assert not at.exception
    assert at.subheader[0].value == "Sign in" and "session_id" not in at.session_state
    assert images(at) == ["/session/clear"]
    assert who(app_db, session_id=session_id, now=utcnow()) is None
    at.run()
    assert images(at) == []  # once


SSO_SECRETS = {"auth": {"redirect_uri": "http://localhost:8501/oauth2callback", "cookie_secret": "test-secret",
                        "client_id": "client", "client_secret": "secret",
                        "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}}


def test_single_sign_on_sign_out_signs_out_of_the_identity_provider_too(app_db):
    with session_scope(app_db) as s:
        create_user(session=s, username="sso@example.com", role="annotator", password="unused-pw", actor=CLI)
    at = AppTest.from_file(APP, default_timeout=30)
    at.secrets = SSO_SECRETS
    at.user = {"is_logged_in": True, "email": "sso@example.com"}
    at.run()  # the identity provider's user is signed in at once
    assert not at.exception and "session_id" in at.session_state
    at.run()
    session_id = at.session_state["session_id"]
    next(b for b in at.button if b.label == "Sign out").click().run()
    assert not at.exception
    assert at.user == {"is_logged_in": False}  # st.logout ran: the browser goes through /auth/logout
    assert who(app_db, session_id=session_id, now=utcnow()) is None
    assert "session_id" not in at.session_state and at.subheader[0].value == "Sign in"
    assert [b.label for b in at.button][0] == "Sign in with single sign-on"


def test_a_tab_that_signed_out_is_not_signed_straight_back_in_by_the_identity_provider(app_db):
    with session_scope(app_db) as s:
        create_user(session=s, username="sso@example.com", role="annotator", password="unused-pw", actor=CLI)
    at = AppTest.from_file(APP, default_timeout=30)
    at.secrets = SSO_SECRETS
    at.user = {"is_logged_in": True, "email": "sso@example.com"}
    at.run()
    at.run()
    next(b for b in at.button if b.label == "Sign out").click().run()
    # Still signed in there as this tab sees it (st.user is read when a tab's session starts):
    at.user = {"is_logged_in": True, "email": "sso@example.com"}
    at.run()
    at.run()
    assert "session_id" not in at.session_state and at.subheader[0].value == "Sign in"
    next(b for b in at.button if b.label == "Sign in with single sign-on").click().run()
    assert not at.exception and "session_id" in at.session_state  # on asking, signed in again
    at.run()
    assert any(b.label == "Sign out" for b in at.button)


def test_a_role_change_signs_the_tab_out_on_its_next_run(app_db, users):
    at = signed_in("ann")
    with session_scope(app_db) as s:
        set_role(session=s, actor=admin(app_db, users), user_id=users["ann"], role="reviewer")
    at.run()
    assert at.subheader[0].value == "Sign in" and "session_id" not in at.session_state
