"""`webhooks ...`: signed event POSTs from the shell (feedback/webhooks.py), the same services the
Webhooks page calls."""
from __future__ import annotations

from cli.common import get_engine
from feedback.errors import UserError


def _events(values: list[str]) -> list[str]:
    return [e for value in values for e in value.split(",")]


def cmd_add(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.webhooks import create_webhook

    with session_scope(get_engine()) as session:
        webhook, secret = create_webhook(session=session, actor=CLI, url=args.url, events=_events(args.events),
                                         description=args.description)
        print(f"webhook {webhook.id}: {', '.join(webhook.events)} -> {webhook.url}")
    print("signing secret (shown once; `webhooks secret ID` shows it again):")
    print(f"  {secret}")


def cmd_list(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.webhooks import list_webhooks

    with session_scope(get_engine(), read_only=True) as session:
        hooks = list_webhooks(session=session, actor=CLI)
        if not hooks:
            raise UserError("No webhooks yet: add one with `webhooks add URL --events ...`.")
        for w in hooks:
            state = "active" if w.active else "off"
            print(f"{w.id:>4}  {state:<6}  {','.join(w.events):<48}  {w.url}" + (f"  ({w.description})"
                                                                               if w.description else ""))


def cmd_set_active(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.webhooks import set_active

    with session_scope(get_engine()) as session:
        set_active(session=session, actor=CLI, webhook_id=args.id, active=args.active)
    print(f"webhook {args.id} {'active' if args.active else 'deactivated'}")


def cmd_secret(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.webhooks import reveal_secret

    with session_scope(get_engine()) as session:
        print(reveal_secret(session=session, actor=CLI, webhook_id=args.id))


def cmd_deliver(args) -> None:
    from feedback.actors import CLI
    from feedback.webhooks import deliver_due, deliver_forever

    def say(report) -> None:  # quiet while there is nothing to do
        if report.delivered or report.retrying or report.failed or report.skipped:
            print(report.summary(), flush=True)

    if args.loop:
        deliver_forever(engine=get_engine(), actor=CLI, every_s=args.every, on_report=say)
    else:
        print(deliver_due(engine=get_engine(), actor=CLI).summary())


def cmd_log(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.webhooks import recent_deliveries

    with session_scope(get_engine(), read_only=True) as session:
        rows = recent_deliveries(session=session, actor=CLI, limit=args.limit)
        if not rows:
            raise UserError("No webhook deliveries yet.")
        print(f"{'id':>5}  {'hook':>4}  {'event':<15} {'status':<9} {'tries':>5}  {'http':>4}  when / error")
        for d in rows:
            when = d.delivered_at if d.status == "delivered" else d.next_attempt_at if d.status == "pending" else None
            note = (d.error or "").splitlines()[0][:80] if d.error else (f"{when:%Y-%m-%d %H:%M:%S}" if when else "")
            print(f"{d.id:>5}  {d.webhook_id:>4}  {d.event:<15} {d.status:<9} {d.attempts:>5}  "
                  f"{d.response_status or '-':>4}  {note}")


def add_commands(sub) -> None:
    from feedback.webhooks import EVENTS

    cmds = sub.add_parser("webhooks", help="signed JSON POSTs on events (round finished, gate result, queue low, "
                                           "judge finished)").add_subparsers(dest="webhooks_command", required=True)
    p = cmds.add_parser("add", help="a new webhook; prints its signing secret once")
    p.add_argument("url", help="http:// or https:// URL that receives the POSTs")
    p.add_argument("--events", action="append", required=True,
                   help=f"comma-separated (or repeat the flag): {', '.join(EVENTS)}")
    p.add_argument("--description", default="")
    p.set_defaults(func=cmd_add)
    cmds.add_parser("list", help="every webhook, active or not").set_defaults(func=cmd_list)
    for name, active in (("deactivate", False), ("activate", True)):
        p = cmds.add_parser(name, help="switch a webhook on" if active else
                            "switch a webhook off (its pending deliveries fail)")
        p.add_argument("id", type=int)
        p.set_defaults(func=cmd_set_active, active=active)
    p = cmds.add_parser("secret", help="print a webhook's signing secret again")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_secret)
    p = cmds.add_parser("deliver", help="post the deliveries that are due (job workers also do after each job)")
    p.add_argument("--loop", action="store_true", help="keep going: look for due deliveries every --every seconds")
    p.add_argument("--every", type=float, default=10.0, help="seconds between looks with --loop")
    p.set_defaults(func=cmd_deliver)
    p = cmds.add_parser("log", help="the latest deliveries: event, status, attempts, response code, error")
    p.add_argument("--limit", type=int, default=30)
    p.set_defaults(func=cmd_log)
