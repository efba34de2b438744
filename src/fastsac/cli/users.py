"""``fastsac users add NAME --data DIR``: accounts of the annotation app; prints an API token."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser("users", help="manage annotation accounts (add prints an API token)",
                       description="Accounts of the annotation app, stored in DIR/annotations.sqlite3 "
                                   "or the PostgreSQL database given with --database.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", help="add | token | list")

    def common(q):
        q.add_argument("--data", metavar="DIR", default=None,
                       help="the app's data folder (holds the SQLite database)")
        q.add_argument("--database", metavar="URL", default=None,
                       help="postgresql://user@host/db (default: DIR/annotations.sqlite3)")

    a = actions.add_parser("add", help="add a user and print an API token for it")
    a.add_argument("name")
    a.add_argument("--role", choices=["admin", "annotator", "viewer"], default="annotator",
                   help="(default: %(default)s)")
    a.add_argument("--password-stdin", action="store_true",
                   help="also set a password for browser login, read from the first line of stdin")
    common(a)
    t = actions.add_parser("token", help="print a new API token for an existing user")
    t.add_argument("name")
    common(t)
    ls = actions.add_parser("list", help="list users and roles")
    common(ls)
    return p


def run(args) -> int:
    if not getattr(args, "action", None):
        print("fastsac users: give an action: add, token or list", file=sys.stderr)
        return 64
    if args.data is None and args.database is None:
        print("fastsac users: give --data DIR or --database URL", file=sys.stderr)
        return 2
    from ..annotate import AnnotationStore

    try:
        store = AnnotationStore.open(args.database, data_dir=args.data)
    except Exception as exc:  # noqa: BLE001 - any driver error becomes one line
        print(f"fastsac users: cannot open the database "
              f"{args.database or args.data}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
              file=sys.stderr)
        return 2
    if args.action == "list":
        for u in store.users():
            print(f"{u.name}\t{u.role}")
        return 0
    if args.action == "add":
        password = None
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
            if not password:
                print("fastsac users: empty password on stdin", file=sys.stderr)
                return 2
        try:
            user = store.add_user(args.name, role=args.role, password=password)
        except ValueError as exc:
            print(f"fastsac users: {exc}", file=sys.stderr)
            return 2
    else:
        user = store.get_user(args.name)
        if user is None:
            print(f"fastsac users: no user {args.name!r}", file=sys.stderr)
            return 2
    token = store.create_token(user, label="cli")
    print(f"# {user.name} ({user.role}): API token (shown once; send as 'Authorization: Bearer TOKEN')",
          file=sys.stderr)
    print(token)
    return 0
