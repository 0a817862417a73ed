"""`projects ...`: labelling projects, their members and guidelines, from the shell."""
from __future__ import annotations

from pathlib import Path

from cli.common import get_engine
from feedback.errors import UserError


def _read(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: no such file.")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: guidelines must be UTF-8 text (markdown).") from None


def cmd_add(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.projects import create_project

    guidelines = _read(args.guidelines) if args.guidelines else None
    if guidelines is not None and not guidelines.strip():
        # create_project skips empty guidelines: the project would quietly be made without them.
        raise UserError(f"{args.guidelines}: the guidelines file is empty.")
    aspects = [a for a in args.aspects.split(",")] if args.aspects else None
    with session_scope(get_engine()) as session:
        project = create_project(session=session, actor=CLI, name=args.name, task_type=args.task, k=args.k,
                                 aspects=aspects, guidelines=guidelines, description=args.description or "",
                                 open_to_all=args.open)
        shape = f"K={project.k}" + (f", aspects {', '.join(project.aspects)}" if project.aspects else "")
        name = project.name  # as stored: stripped of surrounding white space
    print(f"created {args.task} project {name!r} ({shape}{', guidelines v1' if guidelines else ''})")


def cmd_list(args) -> None:
    from sqlalchemy import select

    from db.engine import session_scope
    from db.models import Project
    from feedback.projects import current_guidelines, item_counts, members

    with session_scope(get_engine(), read_only=True) as session:
        counts = item_counts(session=session)
        print(f"{'name':<20} {'task':<9} {'K':>2} {'items':>6} {'guidelines':>10}  members")
        for p in session.scalars(select(Project).order_by(Project.name)):
            g = current_guidelines(session=session, project_id=p.id)
            who = "everyone" if p.open_to_all else ", ".join(members(session=session, project=p)) or "-"
            print(f"{p.name:<20} {p.task_type:<9} {p.k:>2} {counts.get(p.id, 0):>6} "
                  f"{'v' + str(g.version) if g else '-':>10}  {who}")


def cmd_members_add(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.projects import add_member, get_project

    with session_scope(get_engine()) as session:
        project = get_project(session=session, name=args.project)
        added = [name for name in args.users if add_member(session=session, actor=CLI, project=project, username=name)]
    print(f"{args.project}: added {', '.join(added) or 'nobody new'}")


def cmd_members_remove(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.projects import get_project, remove_member

    with session_scope(get_engine()) as session:
        project = get_project(session=session, name=args.project)
        removed = remove_member(session=session, actor=CLI, project=project, username=args.user)
    print(f"{args.project}: {args.user} {'removed' if removed else 'was not a member'}")


def cmd_guidelines(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.projects import add_guidelines, get_project

    text = _read(args.file)
    with session_scope(get_engine()) as session:
        project = get_project(session=session, name=args.project)
        version = add_guidelines(session=session, actor=CLI, project=project, text=text).version
    print(f"{args.project}: guidelines are at v{version}")


def cmd_arena(args) -> None:
    from db.engine import session_scope
    from feedback.actors import CLI
    from feedback.projects import get_project, set_arena

    with session_scope(get_engine()) as session:
        set_arena(session=session, actor=CLI, project=get_project(session=session, name=args.project), arena=args.on)
    print(f"{args.project}: arena mode {'on: refills sample two of its versions head to head' if args.on else 'off'}")


def add_commands(sub) -> None:
    from feedback.projects import TASKS

    projects = sub.add_parser("projects", help="labelling projects").add_subparsers(dest="projects_command",
                                                                                   required=True)
    p = projects.add_parser("add", help="create a project")
    p.add_argument("name")
    p.add_argument("--task", required=True, choices=tuple(TASKS),
                   help="; ".join(f"{name}: {task.summary}" for name, task in TASKS.items()))
    p.add_argument("--k", type=int, help="responses per item for rank and rating (3-8; default 4)")
    p.add_argument("--aspects", help="rating: comma-separated aspects (default: instruction_following, "
                                     "truthfulness, honesty, helpfulness)")
    p.add_argument("--guidelines", metavar="FILE", help="markdown guidelines for annotators (version 1)")
    p.add_argument("--description", help="one line about the project, for admins (stored with it)")
    p.add_argument("--open", action="store_true", help="every annotator may label here, not only members")
    p.set_defaults(func=cmd_add)
    projects.add_parser("list", help="projects with their items, guidelines and members").set_defaults(func=cmd_list)
    members = projects.add_parser("members", help="who labels in a project").add_subparsers(
        dest="members_command", required=True)
    p = members.add_parser("add", help="add users to a project")
    p.add_argument("project")
    p.add_argument("users", nargs="+", metavar="USER")
    p.set_defaults(func=cmd_members_add)
    p = members.add_parser("remove", help="take a user out of a project")
    p.add_argument("project")
    p.add_argument("user")
    p.set_defaults(func=cmd_members_remove)
    p = projects.add_parser("guidelines", help="a new version of a project's guidelines")
    p.add_argument("project")
    p.add_argument("file")
    p.set_defaults(func=cmd_guidelines)
    p = projects.add_parser("arena", help="arena mode: refills pit two of the project's policy versions, blind")
    p.add_argument("project")
    switch = p.add_mutually_exclusive_group(required=True)
    switch.add_argument("--on", dest="on", action="store_true", help="turn it on (needs two or more versions)")
    switch.add_argument("--off", dest="on", action="store_false", help="turn it off")
    p.set_defaults(func=cmd_arena)
