"""`sessiontrace ui`: serve the web UI on a SQLite file or a PostgreSQL database.

Also `python -m sessiontrace.server`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_ui_arguments", "main", "run_ui"]

TOKEN_ENV = "SESSIONTRACE_UI_TOKEN"


def add_ui_arguments(
    parser: argparse.ArgumentParser, *, with_db: bool = True
) -> argparse.ArgumentParser:
    """The options of ``ui``; ``with_db=False`` when the parent parser already has
    ``--db``/``--tracking-uri`` (the ``sessiontrace`` CLI)."""
    if with_db:
        parser.add_argument(
            "--db",
            default=None,
            metavar="PATH|URI",
            help="SQLite file, sqlite:///... or postgresql://user@host/database to serve "
            "(default: the tracking URI's store, ./sessiontrace.db)",
        )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"require this bearer token (at least 16 characters; default ${TOKEN_ENV}); "
        "needed for any non-loopback --host",
    )
    return parser


def run_ui(args: argparse.Namespace) -> int:
    try:
        from . import serve
    except ImportError as exc:
        print(f"sessiontrace ui: {exc}", file=sys.stderr)
        return 2
    from .._config import Settings, hide_password, parse_tracking_uri

    target = (
        getattr(args, "db", None)
        or getattr(args, "tracking_uri", None)
        or Settings.resolve().tracking_uri
    )
    try:
        location = parse_tracking_uri(target)
    except ValueError as exc:
        print(f"sessiontrace ui: {exc}", file=sys.stderr)
        return 2
    if location.scheme in ("http", "https"):
        print("sessiontrace ui: the tracking URI is a server; pass --db PATH|URI", file=sys.stderr)
        return 2
    if location.scheme == "postgresql":
        from .._store import require_postgres

        try:
            require_postgres()
        except ImportError as exc:
            print(f"sessiontrace ui: {exc}", file=sys.stderr)
            return 2
    elif not Path(location.path).exists():
        print(
            f"sessiontrace ui: {location.path} does not exist yet; it is created when "
            "traces arrive",
            file=sys.stderr,
        )
    try:
        serve(db=location.path, host=args.host, port=args.port, token=args.token or None)
    except ValueError as exc:
        print(f"sessiontrace ui: {hide_password(str(exc), target)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_ui_arguments(argparse.ArgumentParser(prog="sessiontrace ui", description=__doc__))
    return run_ui(parser.parse_args(argv))
