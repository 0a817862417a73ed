"""The dashboards' services (feedback/dashboards.py), "today" in the annotator's time zone
(feedback/queue.py progress) and the judge's calibration over time (judges/calibration.py), on
SQLite and Postgres, with every number checked against a hand-counted seed."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from db.engine import session_scope
from db.models import Constitution, ItemDecision, User
from feedback import dashboards, gold, queue
from feedback.actors import Actor
from feedback.errors import PermissionDenied, UserError
from feedback.projects import default_project
from judges import calibration
from judges.constitutions import ensure_shipped
from testkit.factories import add_judgment, add_label, add_lease, make_items, make_users

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # Berlin is UTC+1 until the end of March


def at(day: int, hour: int, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def world(engine):
    """Two annotators and an admin, labels of every source over several days, leases, gold
    answers and judgments with costs; see each line for what it is meant to count as."""
    with session_scope(engine) as s:
        ann, bob = make_users(s, 2)
        (root,) = make_users(s, 1, role="admin", prefix="root")
        p = make_items(s, pairs=12)
        singles = make_items(s, singles=2)
        ensure_shipped(session=s)
        default_c = s.query(Constitution).filter_by(name="default").one().id
        # ann: 09:00 and 09:40 on the 8th (one clock hour), 23:30 UTC on the 9th (the 10th in Berlin),
        # 08:00 on the 10th; 10, 20, 30 and 40 s from lease to label. One on 1 February, outside the window.
        for item, when, seconds in ((p[0], at(8, 9), 10), (p[1], at(8, 9, 40), 20), (p[2], at(9, 23, 30), 30),
                                    (p[3], at(10, 8), 40)):
            add_label(s, item_id=item, at=when, user_id=ann, leased_at=when - timedelta(seconds=seconds))
        add_label(s, item_id=p[8], at=at(1, 10, month=2), user_id=ann)
        add_label(s, item_id=p[4], at=at(9, 10), user_id=bob, leased_at=at(9, 10) - timedelta(seconds=5.5))
        add_label(s, item_id=p[4], at=at(9, 12), source="judge", constitution_id=default_c)
        add_label(s, item_id=p[7], at=at(9, 12), source="judge", constitution_id=default_c)
        add_label(s, item_id=p[6], at=at(10, 1), source="grader", kind="pairwise", choice="b")
        add_label(s, item_id=p[1], at=at(5, 10), source="imported")
        add_lease(s, item_id=p[5], user_id=bob, leased_at=NOW - timedelta(minutes=6),
                  expires_at=NOW + timedelta(minutes=4))
        add_lease(s, item_id=singles[0], user_id=ann, leased_at=NOW, expires_at=NOW + timedelta(seconds=90))
        add_lease(s, item_id=p[6], user_id=ann, leased_at=NOW - timedelta(minutes=20),
                  expires_at=NOW - timedelta(minutes=1))  # expired: p[6] is open again, but not for ann
        # Gold: ann answers three gold pairs in January, two of them right, counted by the real standing code.
        admin = Actor.signed_in(s.get(User, root))
        project = default_project(session=s)
        for item, answer in ((p[9], "a"), (p[10], "b"), (p[11], "a")):
            gold.mark_gold(session=s, actor=admin, item_id=item, answer="a")
            s.get(ItemDecision, item).decided_at = at(1, 0, month=1)
            label = add_label(s, item_id=item, at=at(15, 10, month=1), user_id=ann, kind="pairwise", choice=answer)
            gold.after_label(session=s, label=label, project=project)
        # Spend: two priced judgments and one without a price at noon on the 9th; one late that
        # evening (UTC: the 9th, Berlin: the 10th) on another backend.
        add_judgment(s, item_id=p[4], constitution_id=default_c, at=at(9, 12), cost_usd=0.01)
        add_judgment(s, item_id=p[7], constitution_id=default_c, at=at(9, 12), cost_usd=0.02)
        add_judgment(s, item_id=p[5], constitution_id=default_c, at=at(9, 12), outcome="inconsistent")
        add_judgment(s, item_id=p[6], constitution_id=default_c, at=at(9, 23, 15), cost_usd=0.005,
                     backend="openai", model="gpt-test")
    return {"ann": ann, "bob": bob, "root": root, "pairs": p, "singles": singles}


def records(frame) -> list[dict]:
    return frame.to_dict("records")


def test_my_labels_per_day_in_utc_and_in_berlin(engine, world):
    with session_scope(engine, read_only=True) as s:
        ann = s.get(User, world["ann"])
        utc = dashboards.my_activity(session=s, user=ann, days=7, now=NOW)
        berlin = dashboards.my_activity(session=s, user=ann, days=7, tz="Europe/Berlin", now=NOW)
    assert utc.days == [f"2026-03-{d:02d}" for d in range(4, 11)]
    assert records(utc.labels_per_day) == [{"day": "2026-03-08", "project": "default", "labels": 2},
                                           {"day": "2026-03-09", "project": "default", "labels": 1},
                                           {"day": "2026-03-10", "project": "default", "labels": 1}]
    # 23:30 UTC on the 9th is half past midnight on the 10th in Berlin
    assert records(berlin.labels_per_day) == [{"day": "2026-03-08", "project": "default", "labels": 2},
                                              {"day": "2026-03-10", "project": "default", "labels": 2}]


def test_a_quarter_hour_offset_buckets_exactly(engine, world):
    """Kathmandu is UTC+5:45: 18:15 UTC is its midnight, so slots must be finer than hours."""
    with session_scope(engine) as s:
        bob = s.get(User, world["bob"])
        add_label(s, item_id=world["pairs"][6], at=at(10, 18, 14), user_id=bob.id)  # 23:59 in Kathmandu
        add_label(s, item_id=world["pairs"][7], at=at(10, 18, 15), user_id=bob.id)  # 00:00 the next day
    with session_scope(engine, read_only=True) as s:
        mine = dashboards.my_activity(session=s, user=s.get(User, world["bob"]), days=3, tz="Asia/Kathmandu",
                                      now=at(10, 19))
    assert records(mine.labels_per_day) == [{"day": "2026-03-09", "project": "default", "labels": 1},
                                            {"day": "2026-03-10", "project": "default", "labels": 1},
                                            {"day": "2026-03-11", "project": "default", "labels": 1}]


def test_my_gold_accuracy_and_what_is_left(engine, world):
    with session_scope(engine, read_only=True) as s:
        ann = dashboards.my_activity(session=s, user=s.get(User, world["ann"]), days=7, now=NOW)
        bob = dashboards.my_activity(session=s, user=s.get(User, world["bob"]), days=7, now=NOW)
    assert [(g["project"], g["answers"], g["correct"], g["accuracy"]) for g in ann.gold] == [
        ("default", 3, 2, 0.667)]
    assert bob.gold == []
    left = {row["project"]: row for row in ann.left}
    # pairs: p7 only (p5 is bob's lease, p6 ann had, gold items are not open work)
    assert left["default"]["left"] == 1 and left["default"]["phrase"] == "1 pair left"
    # singles: the one she holds and the one nobody has
    assert left["default-binary"]["phrase"] == "2 responses left"
    assert (left["default"]["today"], left["default"]["total"]) == (1, 8)
    bob_left = {row["project"]: row["phrase"] for row in bob.left}
    assert bob_left == {"default": "3 pairs left", "default-binary": "1 response left"}  # p5 (held), p6, p7


def test_progress_counts_today_from_local_midnight(engine, world):
    with session_scope(engine, read_only=True) as s:
        ann = s.get(User, world["ann"])
        assert queue.progress(session=s, user=ann, kind="pair", now=NOW).today == 1
        assert queue.progress(session=s, user=ann, kind="pair", now=NOW, tz="Europe/Berlin").today == 2
        # at 04:00 UTC it is still the 9th in New York (UTC-4 after 8 March): 10:00 and 23:30 UTC of the 9th
        assert queue.progress(session=s, user=ann, kind="pair", now=at(10, 4), tz="America/New_York").today == 1
        with pytest.raises(UserError, match="Unknown time zone"):
            queue.progress(session=s, user=ann, kind="pair", now=NOW, tz="Mars/Olympus")


def test_admin_labels_per_day_by_source_and_project(engine, world):
    with session_scope(engine, read_only=True) as s:
        admin = Actor.signed_in(s.get(User, world["root"]))
        utc = dashboards.admin_overview(session=s, actor=admin, days=7, now=NOW)
        berlin = dashboards.admin_overview(session=s, actor=admin, days=7, tz="Europe/Berlin", now=NOW)
    assert [(r["day"], r["source"], r["labels"]) for r in records(utc.labels_per_day)] == [
        ("2026-03-05", "imported", 1), ("2026-03-08", "human", 2), ("2026-03-09", "human", 2),
        ("2026-03-09", "judge", 2), ("2026-03-10", "human", 1), ("2026-03-10", "grader", 1)]
    assert set(utc.labels_per_day["project"]) == {"default"}
    assert [(r["day"], r["source"], r["labels"]) for r in records(berlin.labels_per_day)] == [
        ("2026-03-05", "imported", 1), ("2026-03-08", "human", 2), ("2026-03-09", "human", 1),
        ("2026-03-09", "judge", 2), ("2026-03-10", "human", 2), ("2026-03-10", "grader", 1)]


def test_admin_queue_depth_and_open_leases(engine, world):
    with session_scope(engine, read_only=True) as s:
        overview = dashboards.admin_overview(session=s, actor=Actor.signed_in(s.get(User, world["root"])),
                                             days=7, now=NOW)
    queues = {r["project"]: r for r in records(overview.queue)}
    assert (queues["default"]["open_items"], queues["default"]["open_leases"]) == (2, 1)  # p6, p7; bob's p5
    assert queues["default"]["soonest_expiry"] == queues["default"]["latest_expiry"] == NOW + timedelta(minutes=4)
    assert queues["default"]["soonest"] == "expires in 4 min"
    assert queues["default-binary"]["latest"] == "expires in 1 min"
    assert (queues["default-binary"]["open_items"], queues["default-binary"]["open_leases"]) == (1, 1)
    assert [(r["project"], r["annotator"], r["seconds_left"], r["expires"]) for r in records(overview.leases)] == [
        ("default-binary", "ann000", 90, "expires in 1 min"), ("default", "ann001", 240, "expires in 4 min")]


def test_admin_throughput_and_time_per_label(engine, world):
    with session_scope(engine, read_only=True) as s:
        overview = dashboards.admin_overview(session=s, actor=Actor.signed_in(s.get(User, world["root"])),
                                             days=7, now=NOW)
    assert records(overview.throughput) == [
        {"annotator": "ann000", "labels": 4, "active_days": 3, "per_active_day": 1.3, "active_hours": 3,
         "per_active_hour": 1.3, "median_s": 25.0},
        {"annotator": "ann001", "labels": 1, "active_days": 1, "per_active_day": 1.0, "active_hours": 1,
         "per_active_hour": 1.0, "median_s": 5.5}]
    assert [tuple(r.values()) for r in records(overview.throughput_per_day)] == [
        ("2026-03-08", "ann000", 2), ("2026-03-09", "ann000", 1), ("2026-03-09", "ann001", 1),
        ("2026-03-10", "ann000", 1)]


def test_admin_judge_spend_per_day(engine, world):
    with session_scope(engine, read_only=True) as s:
        admin = Actor.signed_in(s.get(User, world["root"]))
        utc = dashboards.admin_overview(session=s, actor=admin, days=7, now=NOW).spend_per_day
        berlin = dashboards.admin_overview(session=s, actor=admin, days=7, tz="Europe/Berlin", now=NOW).spend_per_day
    assert [(r["day"], r["backend"], r["model"], r["judgments"]) for r in records(utc)] == [
        ("2026-03-09", "anthropic", "claude-test", 3), ("2026-03-09", "openai", "gpt-test", 1)]
    assert utc["cost_usd"].tolist() == pytest.approx([0.03, 0.005])
    assert [(r["day"], r["backend"]) for r in records(berlin)] == [
        ("2026-03-09", "anthropic"), ("2026-03-10", "openai")]


def test_admin_overview_is_for_admins_only(engine, world):
    with session_scope(engine, read_only=True) as s:
        ann = Actor.signed_in(s.get(User, world["ann"]))
        with pytest.raises(PermissionDenied, match="admin"):
            dashboards.admin_overview(session=s, actor=ann, now=NOW)


def test_empty_database_gives_empty_frames(engine):
    with session_scope(engine) as s:
        (root,) = make_users(s, 1, role="admin", prefix="root")
    with session_scope(engine, read_only=True) as s:
        user = s.get(User, root)
        overview = dashboards.admin_overview(session=s, actor=Actor.signed_in(user), now=NOW)
        mine = dashboards.my_activity(session=s, user=user, now=NOW)
    assert len(overview.days) == 30 and overview.days[-1] == "2026-03-10"
    for frame in (overview.labels_per_day, overview.leases, overview.throughput, overview.throughput_per_day,
                  overview.spend_per_day, mine.labels_per_day):
        assert frame.empty
    assert mine.gold == []
    # the migrations' default project is there, with nothing in it
    assert [(r["project"], r["phrase"]) for r in mine.left] == [("default", "0 pairs left")]
    assert records(overview.queue)[0]["open_items"] == 0


def test_unknown_time_zone_is_a_user_error(engine):
    with session_scope(engine) as s:
        (ann,) = make_users(s, 1)
    with session_scope(engine, read_only=True) as s, pytest.raises(UserError, match="Unknown time zone"):
        dashboards.my_activity(session=s, user=s.get(User, ann), tz="Europe/Nowhere")


def test_phrases():
    assert dashboards.left_phrase(0, "rank") == "0 items left"
    assert dashboards.left_phrase(1, "edit") == "1 response left"
    assert dashboards.expires_in(45) == "expires in 45 s"
    assert dashboards.expires_in(3 * 3600 + 5 * 60) == "expires in 3 h 5 min"
    assert dashboards.weighted_median({1.0: 1, 3.0: 1}) == 2.0
    assert dashboards.weighted_median({1.0: 2, 9.0: 1}) == 1.0
    assert dashboards.weighted_median({}) is None


# --- calibration over time ----------------------------------------------------------------------


@pytest.fixture
def judged(engine):
    """Six pairs with a human majority and a judge label each, in two weeks: in the first week the
    judge agrees on all four, picking the longer response each time; in the second it disagrees
    on both. Judgments: four in week one (one inconsistent), two in week two."""
    with session_scope(engine) as s:
        humans = make_users(s, 2)
        items = make_items(s, pairs=6)
        ensure_shipped(session=s)
        c = s.query(Constitution).filter_by(name="default").one().id
        from db.models import Item, Response

        for k, item_id in enumerate(items):
            # response a is the longer one
            s.get(Response, s.get(Item, item_id).response_a_id).text += " and then some more words"
            week = at(2, 10) if k < 4 else at(9, 10)  # Mondays
            human = "a" if k < 4 else "b"
            for u in humans:
                add_label(s, item_id=item_id, at=week, user_id=u, kind="pairwise", choice=human)
            add_label(s, item_id=item_id, at=week + timedelta(days=1), source="judge", constitution_id=c,
                      kind="pairwise", choice="a")
            add_judgment(s, item_id=item_id, constitution_id=c, at=week + timedelta(days=1),
                         outcome="inconsistent" if k == 0 else "a", cost_usd=0.001)
    return items


def test_calibration_over_time_per_week(engine, judged):
    with session_scope(engine, read_only=True) as s:
        rows = calibration.calibration_over_time(session=s, period="week")
        report = calibration.judge_report(session=s)
    assert [(r["constitution"], r["period"], r["judgments"], r["labels"]) for r in rows] == [
        ("default v1", "2026-03-02", 4, 4), ("default v1", "2026-03-09", 2, 2)]
    first, second = rows
    assert (first["agreement_with_humans"], first["pairs_with_humans"]) == (1.0, 4)
    assert (second["agreement_with_humans"], second["pairs_with_humans"]) == (0.0, 2)
    assert (first["position_flip_rate"], first["flip_n"]) == (0.25, 4)
    assert (first["longer_wins_rate"], first["longer_n"]) == (1.0, 4)
    assert first["cohen_kappa"] is None  # humans and judge all said "a": kappa is undefined
    assert second["cohen_kappa"] == 0.0  # humans all "b", judge all "a": no agreement beyond chance
    # in all: the same definitions over both weeks
    (row,) = report
    assert (row["judgments"], row["flip_n"], row["pairs_with_humans"]) == (6, 6, 6)
    assert row["agreement_with_humans"] == pytest.approx(4 / 6)
    assert row["position_flip_rate"] == pytest.approx(1 / 6)
    assert row["cohen_kappa"] == pytest.approx(0.0)  # the judge always says "a": no information
    assert row["cost_usd"] == pytest.approx(0.006)
    assert calibration.enough(row["pairs_with_humans"]) and not calibration.enough(second["pairs_with_humans"])


def test_calibration_over_time_per_day_and_month(engine, judged):
    with session_scope(engine, read_only=True) as s:
        days = calibration.calibration_over_time(session=s, period="day")
        months = calibration.calibration_over_time(session=s, period="month")
        with pytest.raises(UserError, match="period"):
            calibration.calibration_over_time(session=s, period="fortnight")
    assert [r["period"] for r in days] == ["2026-03-03", "2026-03-10"]
    assert [(r["period"], r["judgments"]) for r in months] == [("2026-03-01", 6)]


def test_calibration_without_judgments_is_empty(engine):
    with session_scope(engine, read_only=True) as s:
        assert calibration.calibration_over_time(session=s) == []
        assert calibration.judge_report(session=s) == []
        assert calibration.human_agreement(session=s)["alpha"] is None
