"""Commands for HTTP API tokens: tokens create / list / revoke."""
from __future__ import annotations

from cli.common import get_engine


def cmd_tokens_create(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.tokens import create_token

    with session_scope(get_engine()) as session:
        info, token = create_token(session=session, actor=CLI, username=args.user, name=args.name,
                                   expires_days=args.expires)
    expires = f"expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else "never expires"
    print(f"token {info.id} for {info.username} ({expires}); send it as 'Authorization: Bearer <token>'")
    print(f"token (shown once): {token}")


def cmd_tokens_list(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.tokens import list_tokens

    with session_scope(get_engine(), read_only=True) as session:
        tokens = list_tokens(session=session, actor=CLI, username=args.user)
    print(f"{'id':>4}  {'user':<16} {'name':<20} {'prefix':<12} {'state':<8} {'expires':<17} last used")
    for t in tokens:
        expires = f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never"
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        print(f"{t.id:>4}  {t.username:<16} {t.name or '-':<20} {t.prefix + '...':<12} {t.state():<8} {expires:<17} "
              f"{used}")
    if not tokens:
        print("(no tokens)")


def cmd_tokens_revoke(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.tokens import revoke_token

    with session_scope(get_engine()) as session:
        changed = revoke_token(session=session, actor=CLI, token_id=args.id)
    print(f"token {args.id} {'revoked' if changed else 'was already revoked'}")


def add_commands(sub) -> None:
    tokens = sub.add_parser("tokens", help="HTTP API tokens").add_subparsers(dest="tokens_command", required=True)
    p = tokens.add_parser("create", help="make a token acting as a user (with their role); prints it once")
    p.add_argument("--user", required=True, help="the user the token acts as")
    p.add_argument("--name", default="", help="what the token is for, shown in listings")
    p.add_argument("--expires", type=float, metavar="DAYS", help="days until it stops working (default: never)")
    p.set_defaults(func=cmd_tokens_create)
    p = tokens.add_parser("list", help="tokens with their state and last use (never the tokens themselves)")
    p.add_argument("--user", help="only this user's tokens")
    p.set_defaults(func=cmd_tokens_list)
    p = tokens.add_parser("revoke", help="stop a token from working, at once")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_tokens_revoke)
