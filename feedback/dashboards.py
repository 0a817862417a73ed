"""What the Home page charts: a person's own activity, and (admins) the whole team's.

Everything is counted with GROUP BY in the database and bucketed into days here, in the viewer's
time zone: the database groups labels into quarter-hour slots of UTC (every UTC offset in use is a
whole number of quarter hours, so a slot never straddles a local midnight), and Python turns each
slot into a local day. That keeps one query for SQLite and Postgres and the day boundaries exact
in Kolkata or Kathmandu as well as in Berlin.

Days are ISO strings ("2026-03-14"), so a chart shows the local day the viewer lived through and
no browser shifts it again.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from sqlalchemy import BigInteger, Integer, and_, cast, extract, func, literal_column, select
from sqlalchemy.orm import Session

from db.models import LABEL_SOURCES, AnnotatorStanding, Assignment, Item, Judgment, Label, Project, User, utcnow
from feedback import queue
from feedback.actors import Actor
from feedback.errors import UserError
from feedback.gold import Standing
from feedback.projects import all_projects, visible_projects

SLOT_SECONDS = 900  # a quarter hour: the finest grain of any UTC offset in use
LEASE_ROWS = 50  # the soonest-expiring leases listed; the per-project counts cover all of them
# What one item of each task type is called, singular and plural ("1 pair left", "3 pairs left").
NOUNS = {"pairwise": ("pair", "pairs"), "binary": ("response", "responses"), "edit": ("response", "responses"),
         "rank": ("item", "items"), "rating": ("item", "items")}


def zone(tz: str) -> ZoneInfo:
    """The IANA time zone `tz` (what browsers report, e.g. "Europe/Berlin")."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"Unknown time zone {tz[:64]!r}; give an IANA name such as Europe/Berlin.") from None


def left_phrase(count: int, task_type: str) -> str:
    singular, plural = NOUNS.get(task_type, ("item", "items"))
    return f"{count} {singular if count == 1 else plural} left"


def expires_in(seconds: float) -> str:
    """A lease's time left, as a person reads it: "45 s", "4 min", "1 h 5 min"."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"expires in {seconds} s"
    if seconds < 3600:
        return f"expires in {seconds // 60} min"
    return f"expires in {seconds // 3600} h {seconds % 3600 // 60} min"


@dataclass(frozen=True)
class Window:
    """The last `days` local days up to `end`, today included; `start` is the first one's midnight."""

    zone: ZoneInfo
    start: datetime
    end: datetime
    days: list[str]


def window(*, days: int, tz: str, now: datetime | None) -> Window:
    if days < 1:
        raise UserError("Show at least one day.")
    tzinfo = zone(tz)
    end = now or utcnow()
    today = end.astimezone(tzinfo).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(0), tzinfo=tzinfo).astimezone(UTC)
    return Window(tzinfo, start, end, [(first + timedelta(days=k)).isoformat() for k in range(days)])


def _slot(column, dialect: str):
    """The UTC quarter hour `column` falls in, as a whole number (seconds since 1970 // 900).
    The divisor is a literal, not a bound parameter: Postgres must see the GROUP BY expression
    as the very one selected."""
    divisor = literal_column(str(SLOT_SECONDS))
    if dialect == "postgresql":
        return cast(func.floor(extract("epoch", column) / divisor), BigInteger)
    return cast(func.strftime("%s", column), Integer).op("/")(divisor)  # integer division


def local_day(slot: int, tzinfo: ZoneInfo) -> str:
    return datetime.fromtimestamp(int(slot) * SLOT_SECONDS, tzinfo).date().isoformat()


def _per_day(rows, keys: list[str], values: list[str], tzinfo: ZoneInfo) -> pd.DataFrame:
    """Rows of (*keys, slot, *values) summed per (day, *keys)."""
    frame = pd.DataFrame([tuple(r) for r in rows], columns=[*keys, "slot", *values])
    if frame.empty:
        return pd.DataFrame(columns=["day", *keys, *values])
    frame["day"] = [local_day(s, tzinfo) for s in frame["slot"]]
    summed = frame.groupby(["day", *keys], as_index=False)[values].sum()
    return summed.sort_values(["day", *keys], ignore_index=True)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _in_window(column, span: Window):
    return and_(column >= span.start, column <= span.end)


# --- a person's own ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MyActivity:
    days: list[str]
    labels_per_day: pd.DataFrame  # day, project, labels: this person's own, in their time zone
    # project, answers, correct, accuracy, since: their standing's count of gold answers
    # (feedback/gold.py), which starts afresh when an admin lifts a pause
    gold: list[dict] = field(default_factory=list)
    # project, task_type, left, phrase, today, total, standing: per project they may label
    left: list[dict] = field(default_factory=list)


def my_activity(*, session: Session, user: User, days: int = 30, tz: str = "UTC",
                now: datetime | None = None) -> MyActivity:
    """The user's own labels per day and project, gold accuracy and what is left for them."""
    span = window(days=days, tz=tz, now=now)
    slot = _slot(Label.created_at, _dialect(session))
    per_slot = session.execute(
        select(Project.name, slot.label("slot"), func.count()).select_from(Label)
        .join(Item, Item.id == Label.item_id).join(Project, Project.id == Item.project_id)
        .where(Label.user_id == user.id, Label.source == "human", _in_window(Label.created_at, span))
        .group_by(Project.name, slot))
    labels_per_day = _per_day(per_slot, ["project"], ["labels"], span.zone)

    gold = []
    for name, standing in session.execute(
            select(Project.name, AnnotatorStanding).join(Project, Project.id == AnnotatorStanding.project_id)
            .where(AnnotatorStanding.user_id == user.id, AnnotatorStanding.gold_answers > 0)
            .order_by(Project.name)):
        counted = Standing(user.username, standing.status, standing.gold_answers, standing.gold_correct,
                           standing.counted_from)
        gold.append({"project": name, "answers": counted.gold_answers, "correct": counted.gold_correct,
                     "accuracy": counted.accuracy, "since": counted.counted_from})

    held = dict(session.execute(
        select(Item.project_id, func.count()).select_from(Assignment).join(Item, Item.id == Assignment.item_id)
        .where(Assignment.user_id == user.id, Assignment.status == "leased", Assignment.expires_at > span.end)
        .group_by(Item.project_id)).all())
    left = []
    for project in visible_projects(session=session, user=user):
        progress = queue.progress(session=session, user=user, project=project, now=span.end, tz=tz)
        # as the labelling page counts it: what they could be handed, plus the item they hold
        count = progress.open_for_me + held.get(project.id, 0)
        left.append({"project": project.name, "task_type": project.task_type, "left": count,
                     "phrase": left_phrase(count, project.task_type), "today": progress.today,
                     "total": progress.total, "standing": progress.standing})
    return MyActivity(days=span.days, labels_per_day=labels_per_day, gold=gold, left=left)


# --- the team (admins) ------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminOverview:
    days: list[str]
    labels_per_day: pd.DataFrame  # day, source, project, labels
    # project, task_type, open_items, open_leases, soonest_expiry, latest_expiry, and the last two
    # as a person reads them: soonest, latest ("expires in 4 min")
    queue: pd.DataFrame
    leases: pd.DataFrame  # project, annotator, expires_at, seconds_left, expires: the soonest LEASE_ROWS
    throughput_per_day: pd.DataFrame  # day, annotator, labels (people only)
    # annotator, labels, active_days, per_active_day, active_hours, per_active_hour, median_s
    throughput: pd.DataFrame
    spend_per_day: pd.DataFrame  # day, backend, model, cost_usd, judgments


def _labels_by_source(session: Session, span: Window) -> pd.DataFrame:
    slot = _slot(Label.created_at, _dialect(session))
    rows = session.execute(
        select(Label.source, Project.name, slot.label("slot"), func.count()).select_from(Label)
        .join(Item, Item.id == Label.item_id).join(Project, Project.id == Item.project_id)
        .where(_in_window(Label.created_at, span)).group_by(Label.source, Project.name, slot))
    frame = _per_day(rows, ["source", "project"], ["labels"], span.zone)
    # the sources in the schema's order, so every chart stacks and colours them alike
    frame["source"] = pd.Categorical(frame["source"], categories=list(LABEL_SOURCES))
    return frame.sort_values(["day", "source", "project"], ignore_index=True).astype({"source": str})


def _queue(session: Session, span: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    live = and_(Assignment.status == "leased", Assignment.expires_at > span.end)
    per_project = {pid: (n, soonest, latest) for pid, n, soonest, latest in session.execute(
        select(Item.project_id, func.count(), func.min(Assignment.expires_at), func.max(Assignment.expires_at))
        .select_from(Assignment).join(Item, Item.id == Assignment.item_id).where(live).group_by(Item.project_id))}
    rows = []
    for project in all_projects(session=session):
        n, soonest, latest = per_project.get(project.id, (0, None, None))
        rows.append({"project": project.name, "task_type": project.task_type,
                     "open_items": queue.open_item_count(session=session, project=project, now=span.end),
                     "open_leases": n, "soonest_expiry": soonest, "latest_expiry": latest,
                     "soonest": expires_in((soonest - span.end).total_seconds()) if n else None,
                     "latest": expires_in((latest - span.end).total_seconds()) if n else None})
    leases = []
    for name, username, expires_at in session.execute(
            select(Project.name, User.username, Assignment.expires_at).select_from(Assignment)
            .join(Item, Item.id == Assignment.item_id).join(Project, Project.id == Item.project_id)
            .join(User, User.id == Assignment.user_id).where(live)
            .order_by(Assignment.expires_at, Assignment.id).limit(LEASE_ROWS)):
        seconds = (expires_at - span.end).total_seconds()
        leases.append({"project": name, "annotator": username, "expires_at": expires_at,
                       "seconds_left": int(seconds), "expires": expires_in(seconds)})
    columns = ["project", "annotator", "expires_at", "seconds_left", "expires"]
    return pd.DataFrame(rows), pd.DataFrame(leases, columns=columns)


def _tenths_between(start, end, dialect: str):
    """Tenths of a second from `start` to `end`, rounded, as a whole number."""
    if dialect == "postgresql":
        return cast(func.round(extract("epoch", end - start) * literal_column("10")), BigInteger)
    # julianday keeps the fraction of a second that strftime('%s') drops
    return cast(func.round((func.julianday(end) - func.julianday(start)) * literal_column("864000.0")), Integer)


def weighted_median(counts: dict[float, int]) -> float | None:
    """The median of values given as {value: how many times}."""
    total = sum(counts.values())
    if not total:
        return None
    ordered = sorted(counts.items())

    def nth(k: int) -> float:  # the k-th smallest value, from 0
        seen = 0
        for value, n in ordered:
            seen += n
            if k < seen:
                return value
        raise IndexError(k)

    middle = total // 2
    return nth(middle) if total % 2 else (nth(middle - 1) + nth(middle)) / 2


def _throughput(session: Session, span: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    dialect = _dialect(session)
    slot = _slot(Label.created_at, dialect)
    per_slot = list(session.execute(
        select(User.username, slot.label("slot"), func.count()).select_from(Label)
        .join(User, User.id == Label.user_id)
        .where(Label.source == "human", _in_window(Label.created_at, span)).group_by(User.username, slot)))
    per_day = _per_day(per_slot, ["annotator"], ["labels"], span.zone)
    # Time per label as feedback/quality.py measures it: from the lease to the label, to a tenth of
    # a second, counted per (annotator, tenth) so no row per label leaves the database.
    tenths = _tenths_between(Assignment.leased_at, Label.created_at, dialect)
    durations: dict[str, dict[float, int]] = defaultdict(dict)
    for username, value, n in session.execute(
            select(User.username, tenths.label("tenths"), func.count()).select_from(Label)
            .join(User, User.id == Label.user_id)
            .join(Assignment, and_(Assignment.item_id == Label.item_id, Assignment.user_id == Label.user_id))
            .where(Label.source == "human", _in_window(Label.created_at, span)).group_by(User.username, tenths)):
        durations[username][int(value) / 10] = n
    hours: dict[str, set] = defaultdict(set)
    totals: dict[str, int] = defaultdict(int)
    for username, s, n in per_slot:
        hours[username].add(datetime.fromtimestamp(int(s) * SLOT_SECONDS, span.zone).replace(minute=0))
        totals[username] += n
    active_days = per_day.groupby("annotator")["day"].nunique().to_dict() if not per_day.empty else {}
    rows = [{"annotator": who, "labels": n, "active_days": active_days[who],
             "per_active_day": round(n / active_days[who], 1), "active_hours": len(hours[who]),
             "per_active_hour": round(n / len(hours[who]), 1),
             "median_s": weighted_median(durations[who]) if durations.get(who) else None}
            for who, n in totals.items()]
    rows.sort(key=lambda r: (-r["labels"], r["annotator"]))
    columns = ["annotator", "labels", "active_days", "per_active_day", "active_hours", "per_active_hour", "median_s"]
    return per_day, pd.DataFrame(rows, columns=columns)


def _spend(session: Session, span: Window) -> pd.DataFrame:
    slot = _slot(Judgment.created_at, _dialect(session))
    rows = session.execute(
        select(Judgment.backend, Judgment.model, slot.label("slot"), func.coalesce(func.sum(Judgment.cost_usd), 0.0),
               func.count())
        .where(_in_window(Judgment.created_at, span)).group_by(Judgment.backend, Judgment.model, slot))
    frame = _per_day(rows, ["backend", "model"], ["cost_usd", "judgments"], span.zone)
    return frame.astype({"cost_usd": float})


def admin_overview(*, session: Session, actor: Actor, days: int = 30, tz: str = "UTC",
                   now: datetime | None = None) -> AdminOverview:
    """Labels per day by source and project, the queues and their leases, each person's
    throughput and the judge's spend per day (admins)."""
    actor.require("admin")
    span = window(days=days, tz=tz, now=now)
    queues, leases = _queue(session, span)
    throughput_per_day, throughput = _throughput(session, span)
    return AdminOverview(days=span.days, labels_per_day=_labels_by_source(session, span), queue=queues,
                         leases=leases, throughput_per_day=throughput_per_day, throughput=throughput,
                         spend_per_day=_spend(session, span))
