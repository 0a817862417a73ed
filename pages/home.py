"""Home: the totals, your own labels per day, gold accuracy and what is left for you; for admins
also the team's labels by source and project, the queues and their leases, each person's
throughput, the judge's spend and the policy versions. Days are in the viewer's time zone."""
import altair as alt
import pandas as pd
import streamlit as st

from db.engine import session_scope
from feedback import dashboards
from feedback.actors import Actor
from feedback.browse import counts
from feedback.errors import UserError
from feedback.policies import list_policies
from feedback.render import inert_text
from pages.common import get_engine, signed_in_user, user_timezone

DAYS = 30
BAR_HEIGHT = 240

user = signed_in_user()
tz = user_timezone()
st.title("Preference data")

try:
    with session_scope(get_engine(), read_only=True) as session:
        totals = counts(session=session)
        mine = dashboards.my_activity(session=session, user=user, days=DAYS, tz=tz)
        team = (dashboards.admin_overview(session=session, actor=Actor.signed_in(user), days=DAYS, tz=tz)
                if user.role == "admin" else None)
        versions = [
            {"name": v.name, "status": v.status, "base model": v.base_model, "stage": v.stage,
             "parent": v.parent.name if v.parent else None, "created": v.created_at}
            for v in list_policies(session=session)
        ] if user.role == "admin" else []
except UserError as exc:
    st.error(inert_text(exc))
    st.stop()
# after the services: they refuse a time zone that is not a real one
st.caption(f"Signed in as {user.username} ({user.role})")
st.caption(f"Charts cover the last {DAYS} days, by day in {tz}.")


def day_bars(frame: pd.DataFrame, *, y: str, color: str | None, y_title: str, fmt: str = "d") -> None:
    """Bars per local day over the whole window (days without any stay visible as gaps)."""
    x = alt.X("day:O", title=None, scale=alt.Scale(domain=mine.days), axis=alt.Axis(labelAngle=-45))
    encoding = {"x": x, "y": alt.Y(f"sum({y}):Q", title=y_title, axis=alt.Axis(format=fmt)),
                "tooltip": ["day:O", alt.Tooltip(f"sum({y}):Q", title=y_title, format=fmt)]}
    if color:
        encoding["color"] = alt.Color(f"{color}:N", title=None)
        encoding["tooltip"].insert(1, f"{color}:N")
    st.altair_chart(alt.Chart(frame).mark_bar().encode(**encoding).properties(height=BAR_HEIGHT), width="stretch")


cols = st.columns(len(totals))
for col, (name, value) in zip(cols, totals.items(), strict=True):
    col.metric(name.capitalize(), value)

st.subheader("Your labels per day")
if mine.labels_per_day.empty:
    st.info(f"No labels yet — your labels of the last {DAYS} days appear here, per day and project, as soon as "
            "you label an item (Label, in the sidebar).")
else:
    day_bars(mine.labels_per_day, y="labels", color="project", y_title="labels")

st.subheader("Left for you")
if not mine.left:
    st.info("You are in no project yet: an admin can add you to one on the Projects page.")
else:
    left_cols = st.columns(min(4, len(mine.left)))
    for k, row in enumerate(mine.left):
        # The number is the metric; "3 pairs left" goes in the label, where a long noun still fits.
        shown = "paused" if row["standing"] == "paused" else row["left"]
        label = row["project"] if row["standing"] == "paused" else f"{row['project']} · {row['phrase']}"
        left_cols[k % len(left_cols)].metric(label, shown, help=f"{row['today']} of yours today, "
                                             f"{row['total']} in all ({row['task_type']})")

st.subheader("Your gold accuracy")
if not mine.gold:
    st.info("No check items answered yet — some projects hand out items with a known answer now and then; your "
            "accuracy on them appears here after your first one.")
else:
    st.dataframe(pd.DataFrame([{"project": g["project"], "accuracy": g["accuracy"],
                                "right": f"{g['correct']} of {g['answers']}", "counted since": g["since"]}
                               for g in mine.gold]),
                 hide_index=True, width="stretch",
                 column_config={"accuracy": st.column_config.NumberColumn(format="percent")})

if team is not None:
    st.header("Team")
    st.subheader("Labels per day by source")
    if team.labels_per_day.empty:
        st.info(f"No labels in the last {DAYS} days — labels from people, the AI judge, graders and imports "
                "appear here per day once any are written.")
    else:
        day_bars(team.labels_per_day, y="labels", color="source", y_title="labels")
        st.subheader("Labels per day by project")
        day_bars(team.labels_per_day, y="labels", color="project", y_title="labels")

    st.subheader("Queues")
    q1, q2 = st.columns(2)
    q1.metric("Open items", int(team.queue["open_items"].sum()) if not team.queue.empty else 0,
              help="Items some annotator could still be handed, over every project.")
    q2.metric("Open leases", int(team.queue["open_leases"].sum()) if not team.queue.empty else 0,
              help="Items handed out and not yet labelled, skipped or expired.")
    if not team.queue.empty:
        st.dataframe(team.queue[["project", "task_type", "open_items", "open_leases", "soonest", "latest"]],
                     hide_index=True, width="stretch",
                     column_config={"task_type": "task", "open_items": "open items", "open_leases": "open leases",
                                    "soonest": "soonest lease", "latest": "latest lease"})
    if team.leases.empty:
        st.caption("No open leases: nobody is holding an item right now.")
    else:
        st.dataframe(team.leases[["project", "annotator", "expires"]], hide_index=True, width="stretch")

    st.subheader("Throughput per annotator")
    if team.throughput.empty:
        st.info(f"No labels from people in the last {DAYS} days — each annotator's labels per day, and the "
                "time they take per label, appear here once someone labels.")
    else:
        day_bars(team.throughput_per_day, y="labels", color="annotator", y_title="labels")
        st.dataframe(team.throughput, hide_index=True, width="stretch", column_config={
            "active_days": "active days", "per_active_day": "labels per active day",
            "active_hours": "active hours", "per_active_hour": "labels per active hour",
            "median_s": st.column_config.NumberColumn("median s per label", help="From the lease to the label.")})

    st.subheader("Judge spend per day")
    if team.spend_per_day.empty:
        st.info(f"No AI judge spend in the last {DAYS} days — what each judge batch costs appears here per day "
                "and model once a batch runs (AI judge page).")
    else:
        spend = team.spend_per_day.assign(model=team.spend_per_day["backend"] + ":" + team.spend_per_day["model"])
        day_bars(spend, y="cost_usd", color="model", y_title="USD", fmt="$,.3f")  # judge calls cost fractions of a cent

    st.subheader("Policy versions")
    st.dataframe(pd.DataFrame(versions), hide_index=True, width="stretch")
