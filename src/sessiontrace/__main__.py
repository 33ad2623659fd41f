"""The ``sessiontrace`` command: search traces and read sessions and users from a shell.

    sessiontrace traces --filter "metadata.`mlflow.trace.session` = 'session-abc-0'"
    sessiontrace sessions                 # one row a session, most recent first
    sessiontrace session session-abc-0    # the conversation, turn by turn
    sessiontrace users ; sessiontrace user user-123 --days 7 ; sessiontrace versions
    sessiontrace users --by-cost          # the most expensive users first
    sessiontrace models                   # LLM calls, tokens and cost per model
    sessiontrace sessions --by-negative   # the sessions with the most thumbs-down first
    sessiontrace users --by-satisfaction  # the least satisfied users first
    sessiontrace feedback --key app_version --days 30   # feedback per day and version

Tables by default; ``--json`` or ``--csv`` for scripts (data on stdout, the next
page's token and messages on stderr). The store is ``--db`` (a SQLite file,
``sqlite:///...`` or ``postgresql://...``), ``--tracking-uri`` or
``SESSIONTRACE_TRACKING_URI``; a password in a URI is never printed. Exit status 2
means bad usage: a bad filter (the message points at the character) or no database;
1 means nothing was found.

Each subcommand is one ``add_*`` function in ``COMMANDS``: it adds its parser and
sets ``run`` to a function ``(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._store._base import Store

__all__ = ["COMMANDS", "CommandError", "main", "open_store"]

Subparsers = Any  # argparse's _SubParsersAction is private
MAX_CELL = 60


class CommandError(Exception):
    """A usage problem reported as one line and exit status ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# -- shared options and helpers -------------------------------------------------------


def _common(subcommand: bool) -> argparse.ArgumentParser:
    # Accepted before or after the subcommand; SUPPRESS keeps a subparser from
    # resetting a value given before it.
    default: Any = argparse.SUPPRESS if subcommand else None
    p = argparse.ArgumentParser(add_help=False)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        metavar="PATH|URI",
        default=default,
        help="SQLite file, sqlite:///... or postgresql://user@host/database",
    )
    where.add_argument(
        "--tracking-uri",
        metavar="URI",
        default=default,
        help="e.g. sqlite:///traces.db (default: $SESSIONTRACE_TRACKING_URI or sessiontrace.db)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        default=argparse.SUPPRESS if subcommand else "table",
        help="print JSON",
    )
    fmt.add_argument(
        "--csv",
        dest="format",
        action="store_const",
        const="csv",
        default=argparse.SUPPRESS,
        help="print CSV",
    )
    return p


def open_store(args: argparse.Namespace) -> Store:
    """The store named by ``--db``/``--tracking-uri``/the environment; a SQLite file
    must exist (reading must not create one), a PostgreSQL database is connected to
    on the first query."""
    from ._config import Settings, parse_tracking_uri
    from ._store import open_location

    try:
        target = (
            getattr(args, "db", None)
            or getattr(args, "tracking_uri", None)
            or Settings.resolve().tracking_uri
        )
        location = parse_tracking_uri(target)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if location.scheme in ("http", "https"):
        raise CommandError(
            f"{location.path} is a sessiontrace server; read its UI, or give the CLI "
            "the database: --db PATH or --db postgresql://..."
        )
    if location.scheme == "sqlite" and not Path(location.path).is_file():
        raise CommandError(
            f"no trace database at {location.path} (choose one with --db PATH|URI or "
            "--tracking-uri)"
        )
    try:
        store = open_location(location)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    args._store = store  # closed by main() when the command ends
    return store


def _database_errors() -> tuple[type[BaseException], ...]:
    """The errors of a store's database, psycopg's only when it is loaded."""
    psycopg = sys.modules.get("psycopg")
    errors: tuple[type[BaseException], ...] = (sqlite3.DatabaseError,)
    return (*errors, psycopg.Error) if psycopg is not None else errors


def _time(ms: int | None) -> str:
    if ms is None:
        return ""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _usd(value: float | None) -> str:
    """A cost in dollars; blank when nothing was priced (unknown is not $0)."""
    if value is None:
        return ""
    return f"${value:,.4f}" if value >= 0.01 else f"${value:.6f}"


def _tokens(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


# The LLM columns every aggregate table ends with.
LLM_TABLE: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("llm_calls", lambda r: r["llm_calls"]),
    ("tokens", lambda r: _tokens(r["total_tokens"])),
    ("cost", lambda r: _usd(r["cost"])),
    ("unpriced", lambda r: r["unpriced_calls"]),
]


def _rate_cell(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


# The feedback columns of the sessions, users and versions tables (before the LLM
# columns): valid feedback, the share of thumbs-up among boolean values, and the
# thumbs-down.
FEEDBACK_TABLE: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("feedback", lambda r: r["feedback_count"]),
    ("satisfaction", lambda r: _rate_cell(r["satisfaction"])),
    ("negative", lambda r: r["negative_feedback"]),
]


def _feedback_cell(items: Sequence[dict[str, Any]]) -> str:
    """A turn's valid feedback as ``name=value`` pairs (JSON values)."""
    return "; ".join(
        f"{f['name']}={json.dumps(f['value'], ensure_ascii=False)}" for f in items if f["valid"]
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _cell(value: Any) -> str:
    text = " ".join(_text(value).split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def emit(
    args: argparse.Namespace,
    records: Sequence[dict[str, Any]],
    table: Sequence[tuple[str, Callable[[dict[str, Any]], Any]]],
    *,
    next_page_token: str | None = None,
) -> None:
    """Print records as JSON (as they are), CSV (the table's columns) or a table."""
    fmt = getattr(args, "format", "table") or "table"
    out = sys.stdout
    if fmt == "json":
        json.dump(list(records), out, ensure_ascii=False, indent=2, default=str)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow([name for name, _ in table])
        for record in records:
            writer.writerow([_text(get(record)) for _, get in table])
    else:
        _print_table(
            [name for name, _ in table],
            [[_cell(get(r)) for _, get in table] for r in records],
        )
    if next_page_token is not None:
        print(f"more results: --page-token {next_page_token}", file=sys.stderr)


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    if not rows:
        print("(no results)", file=sys.stderr)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _paging_args(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--filter", metavar="FILTER", help="search_traces filter string")
    p.add_argument(
        "--order-by", metavar="KEY [ASC|DESC]", action="append", help="repeat for more keys"
    )
    p.add_argument("--max-results", type=_positive_int, default=default, metavar="N")
    p.add_argument("--page-token", metavar="TOKEN")


def _by_cost_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--by-cost",
        action="store_true",
        help="most expensive first (the same as --order-by 'cost DESC')",
    )


def _by_feedback_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--by-negative",
        action="store_true",
        help="most negative feedback first (--order-by 'negative_feedback DESC')",
    )
    p.add_argument(
        "--by-satisfaction",
        action="store_true",
        help="lowest satisfaction first, none last (--order-by 'satisfaction ASC')",
    )


def _order(args: argparse.Namespace) -> list[str] | None:
    order: list[str] | None = getattr(args, "order_by", None)
    first = [
        key
        for flag, key in (
            ("by_cost", "cost DESC"),
            ("by_negative", "negative_feedback DESC"),
            ("by_satisfaction", "satisfaction ASC"),
        )
        if getattr(args, flag, False)
    ]
    if first:
        return [*first, *(order or [])]
    return order


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# -- commands -------------------------------------------------------------------------


def add_traces(sub: Subparsers) -> None:
    p = sub.add_parser("traces", help="search traces", parents=[_common(True)])
    _paging_args(p, default=20)
    p.set_defaults(run=run_traces)


def run_traces(args: argparse.Namespace) -> int:
    from ._search import search_traces
    from ._store._rows import llm_totals

    traces = search_traces(
        filter_string=args.filter,
        order_by=args.order_by,
        max_results=args.max_results,
        page_token=args.page_token,
        return_type="list",
        include_spans=False,
        store=open_store(args),
    )
    records = []
    for t in traces:
        record = t.info.to_dict()
        record["user_id"] = t.info.user_id
        record["session_id"] = t.info.session_id
        record.update(llm_totals(t.info))
        records.append(record)
    emit(
        args,
        records,
        [
            ("trace_id", lambda r: r["trace_id"]),
            ("time", lambda r: _time(r["request_time"])),
            ("user", lambda r: r["user_id"]),
            ("session", lambda r: r["session_id"]),
            ("state", lambda r: r["state"]),
            ("ms", lambda r: r["execution_duration"]),
            ("name", lambda r: r["name"]),
            ("tokens", lambda r: _tokens(r["total_tokens"]) if r["llm_calls"] else ""),
            ("cost", lambda r: _usd(r["cost"])),
            ("request", lambda r: r["request_preview"]),
        ],
        next_page_token=traces.next_page_token,
    )
    return 0


def add_sessions(sub: Subparsers) -> None:
    p = sub.add_parser(
        "sessions", help="one row a session, most recent first", parents=[_common(True)]
    )
    _paging_args(p, default=50)
    _by_cost_arg(p)
    _by_feedback_args(p)
    p.set_defaults(run=run_sessions)


def run_sessions(args: argparse.Namespace) -> int:
    from ._analytics import list_sessions

    page = list_sessions(
        args.filter, _order(args), args.max_results, args.page_token, store=open_store(args)
    )
    emit(
        args,
        [s.to_dict() for s in page],
        [
            ("session_id", lambda r: r["session_id"]),
            ("users", lambda r: ",".join(r["user_ids"])),
            ("first_seen", lambda r: _time(r["first_seen_ms"])),
            ("last_seen", lambda r: _time(r["last_seen_ms"])),
            ("turns", lambda r: r["turns"]),
            ("errors", lambda r: r["errors"]),
            ("mean_ms", lambda r: _ms(r["mean_duration_ms"])),
            *FEEDBACK_TABLE,
            *LLM_TABLE,
            ("first_request", lambda r: r["first_request_preview"]),
        ],
        next_page_token=page.next_page_token,
    )
    return 0


def add_session(sub: Subparsers) -> None:
    p = sub.add_parser("session", help="a conversation, turn by turn", parents=[_common(True)])
    p.add_argument("session_id")
    p.set_defaults(run=run_session)


def run_session(args: argparse.Namespace) -> int:
    from ._analytics import session_flow

    turns = session_flow(args.session_id, store=open_store(args))
    if not turns:
        raise CommandError(f"no traces in session {args.session_id!r}", status=1)
    emit(
        args,
        [t.to_dict() for t in turns],
        [
            ("turn", lambda r: r["turn"]),
            ("time", lambda r: _time(r["timestamp"])),
            ("ms", lambda r: r["duration_ms"]),
            ("status", lambda r: r["status"]),
            ("user", lambda r: r["user_id"]),
            ("tokens", lambda r: _tokens(r["total_tokens"]) if r["llm_calls"] else ""),
            ("cost", lambda r: _usd(r["cost"])),
            ("request", lambda r: r["request"]),
            ("response", lambda r: r["response"]),
            ("feedback", lambda r: _feedback_cell(r["feedback"])),
        ],
    )
    return 0


def add_users(sub: Subparsers) -> None:
    p = sub.add_parser("users", help="one row a user, most recent first", parents=[_common(True)])
    _paging_args(p, default=50)
    _by_cost_arg(p)
    _by_feedback_args(p)
    p.set_defaults(run=run_users)


def run_users(args: argparse.Namespace) -> int:
    from ._analytics import list_users

    page = list_users(
        args.filter, _order(args), args.max_results, args.page_token, store=open_store(args)
    )
    emit(
        args,
        [u.to_dict() for u in page],
        [
            ("user_id", lambda r: r["user_id"]),
            ("first_seen", lambda r: _time(r["first_seen_ms"])),
            ("last_seen", lambda r: _time(r["last_seen_ms"])),
            ("sessions", lambda r: r["sessions"]),
            ("traces", lambda r: r["traces"]),
            ("error_rate", lambda r: f"{r['error_rate']:.1%}"),
            ("mean_ms", lambda r: _ms(r["mean_latency_ms"])),
            *FEEDBACK_TABLE,
            *LLM_TABLE,
        ],
        next_page_token=page.next_page_token,
    )
    return 0


def add_user(sub: Subparsers) -> None:
    p = sub.add_parser("user", help="one user's activity report", parents=[_common(True)])
    p.add_argument("user_id")
    p.add_argument("--days", type=_positive_int, default=7, help="window in days (default 7)")
    p.set_defaults(run=run_user)


def run_user(args: argparse.Namespace) -> int:
    from ._analytics import user_report

    report = user_report(args.user_id, days=args.days, store=open_store(args))
    if report is None:
        raise CommandError(f"no traces for user {args.user_id!r}", status=1)
    fmt = getattr(args, "format", "table")
    if fmt == "json":
        json.dump(report.to_dict(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    summary = {
        "user_id": report.user_id,
        "days": report.days,
        "first_seen": _time(report.first_seen_ms),
        "last_seen": _time(report.last_seen_ms),
        "traces": report.traces,
        "sessions": report.sessions,
        "errors": report.errors,
        "error_rate": round(report.error_rate, 4),
        "mean_latency_ms": None
        if report.mean_latency_ms is None
        else round(report.mean_latency_ms, 1),
        "llm_calls": report.llm_calls,
        "input_tokens": report.input_tokens,
        "output_tokens": report.output_tokens,
        "total_tokens": report.total_tokens,
        "cost": report.cost,
        "unpriced_calls": report.unpriced_calls,
        "feedback_count": report.feedback_count,
        "negative_feedback": report.negative_feedback,
        "satisfaction": None if report.satisfaction is None else round(report.satisfaction, 4),
    }
    if fmt == "csv":
        emit(args, [summary], [(k, itemgetter(k)) for k in summary])
        return 0
    print(f"User {report.user_id}: activity in the last {report.days} days")
    print("=" * 50)
    for key, value in summary.items():
        if key == "cost":
            value = _usd(report.cost)
        elif key == "satisfaction":
            value = _rate_cell(report.satisfaction)
        elif key.endswith("_tokens"):
            value = _tokens(report.__dict__[key])
        if key not in ("user_id", "days"):
            label = {"feedback_count": "feedback", "negative_feedback": "negative"}.get(key, key)
            print(f"{label + ':':<17}{'' if value is None else value}")
    print("\nDaily activity:")
    _print_table(
        ["date", "traces", "errors", "llm_calls", "tokens", "cost"],
        [
            [
                d.date,
                str(d.traces),
                str(d.errors),
                str(d.llm_calls),
                _tokens(d.total_tokens),
                _usd(d.cost),
            ]
            for d in report.daily_activity
        ],
    )
    if report.feedback:
        print("\nFeedback:")
        _print_feedback_stats(report.feedback.values())
    if report.tags:
        print("\nTags:")
        _print_table(
            ["tag", "value", "traces"],
            [[k, _cell(v), str(n)] for k, counts in report.tags.items() for v, n in counts.items()],
        )
    return 0


def add_versions(sub: Subparsers) -> None:
    p = sub.add_parser(
        "versions",
        help="traces, users, errors and latency per app version (or other key)",
        parents=[_common(True)],
    )
    p.add_argument("--key", default="app_version", help="metadata key (default app_version)")
    p.add_argument("--filter", metavar="FILTER", help="search_traces filter string")
    p.add_argument(
        "--order-by", metavar="KEY [ASC|DESC]", action="append", help="repeat for more keys"
    )
    _by_cost_arg(p)
    _by_feedback_args(p)
    p.set_defaults(run=run_versions)


def run_versions(args: argparse.Namespace) -> int:
    from ._analytics import metadata_breakdown

    rows = metadata_breakdown(args.key, args.filter, order_by=_order(args), store=open_store(args))
    emit(
        args,
        [r.to_dict() for r in rows],
        [
            (args.key, lambda r: r["value"]),
            ("traces", lambda r: r["traces"]),
            ("users", lambda r: r["users"]),
            ("errors", lambda r: r["errors"]),
            ("error_rate", lambda r: f"{r['error_rate']:.1%}"),
            ("mean_ms", lambda r: _ms(r["mean_latency_ms"])),
            ("first_seen", lambda r: _time(r["first_seen_ms"])),
            ("last_seen", lambda r: _time(r["last_seen_ms"])),
            *FEEDBACK_TABLE,
            *LLM_TABLE,
        ],
    )
    return 0


def add_models(sub: Subparsers) -> None:
    p = sub.add_parser(
        "models",
        help="LLM calls, tokens and cost per model, most calls first",
        parents=[_common(True)],
    )
    p.add_argument("--filter", metavar="FILTER", help="search_traces filter string")
    p.add_argument(
        "--order-by", metavar="KEY [ASC|DESC]", action="append", help="repeat for more keys"
    )
    _by_cost_arg(p)
    p.add_argument("--max-results", type=_positive_int, default=100, metavar="N")
    p.set_defaults(run=run_models)


def run_models(args: argparse.Namespace) -> int:
    from ._analytics import model_breakdown

    rows = model_breakdown(
        args.filter, order_by=_order(args), max_results=args.max_results, store=open_store(args)
    )
    emit(
        args,
        [r.to_dict() for r in rows],
        [
            ("model", lambda r: r["model"]),
            ("provider", lambda r: r["provider"]),
            ("traces", lambda r: r["traces"]),
            ("users", lambda r: r["users"]),
            ("llm_calls", lambda r: r["llm_calls"]),
            ("input_tokens", lambda r: _tokens(r["input_tokens"])),
            ("output_tokens", lambda r: _tokens(r["output_tokens"])),
            ("cost", lambda r: _usd(r["cost"])),
            ("unpriced", lambda r: r["unpriced_calls"]),
        ],
    )
    return 0


def _print_feedback_stats(stats: Any) -> None:
    _print_table(
        ["name", "count", "positive", "negative", "positive_rate", "mean"],
        [
            [
                _cell(f.name),
                str(f.count),
                str(f.positive),
                str(f.negative),
                _rate_cell(f.positive_rate),
                "" if f.mean is None else f"{f.mean:.3g}",
            ]
            for f in stats
        ],
    )


def add_feedback(sub: Subparsers) -> None:
    p = sub.add_parser(
        "feedback",
        help="users' feedback per day (per user, app version or other metadata key)",
        parents=[_common(True)],
    )
    p.add_argument("--filter", metavar="FILTER", help="search_traces filter string")
    p.add_argument("--user", metavar="USER_ID", help="one user's feedback")
    p.add_argument("--key", metavar="KEY", help="split each day by this metadata key's values")
    p.add_argument("--name", metavar="NAME", help="one feedback name (e.g. thumbs_up)")
    p.add_argument("--days", type=_positive_int, default=30, help="window in days (default 30)")
    p.set_defaults(run=run_feedback)


def run_feedback(args: argparse.Namespace) -> int:
    from ._analytics import feedback_over_time

    rows = feedback_over_time(
        args.filter,
        user_id=args.user,
        metadata_key=args.key,
        name=args.name,
        days=args.days,
        store=open_store(args),
    )
    table: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [("date", lambda r: r["date"])]
    if args.key:
        table.append((args.key, lambda r: r["value"]))
    emit(
        args,
        [r.to_dict() for r in rows],
        [
            *table,
            *FEEDBACK_TABLE,
            (
                "by_name",
                lambda r: "; ".join(
                    f"{n}: {s['count']}"
                    + ("" if s["positive_rate"] is None else f" {s['positive_rate']:.0%} positive")
                    + ("" if s["mean"] is None else f" mean {s['mean']:.3g}")
                    for n, s in r["feedback"].items()
                ),
            ),
        ],
    )
    return 0


def add_ui(sub: Subparsers) -> None:
    from .server._cli import add_ui_arguments, run_ui

    p = sub.add_parser(
        "ui",
        help="serve the web UI on the database (needs sessiontrace[ui])",
        description="Serve the web UI, its JSON API and remote ingest on the database. "
        "Binds 127.0.0.1 by default; any other --host needs --token.",
    )
    where = p.add_mutually_exclusive_group()  # SUPPRESS: keep a --db given before "ui"
    where.add_argument(
        "--db",
        metavar="PATH|URI",
        default=argparse.SUPPRESS,
        help="SQLite file, sqlite:///... or postgresql://user@host/database",
    )
    where.add_argument("--tracking-uri", metavar="URI", default=argparse.SUPPRESS)
    add_ui_arguments(p, with_db=False)
    p.set_defaults(run=run_ui)


# Adding a subcommand (e.g. ``ui``) is one function appended here.
COMMANDS: list[Callable[[Subparsers], None]] = [
    add_traces,
    add_sessions,
    add_session,
    add_users,
    add_user,
    add_versions,
    add_models,
    add_feedback,
    add_ui,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessiontrace",
        description="Who did what, in which conversation: search traces, sessions and users.",
        parents=[_common(False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _target(args: argparse.Namespace) -> str:
    """The URI the store came from, whose password no message may show."""
    from ._config import ENV_VARS

    given = getattr(args, "db", None) or getattr(args, "tracking_uri", None)
    return str(given or os.environ.get(ENV_VARS["tracking_uri"], ""))


def main(argv: Sequence[str] | None = None) -> int:
    from ._config import hide_password
    from ._search import FilterSyntaxError

    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2

    def fail(message: str, status: int = 2) -> int:
        print(f"sessiontrace: {hide_password(message, _target(args))}", file=sys.stderr)
        return status

    try:
        return run(args)
    except FilterSyntaxError as exc:
        return fail(f"bad filter: {exc}")
    except CommandError as exc:
        return fail(str(exc), exc.status)
    except ValueError as exc:  # a bad page token, order key or option value
        return fail(str(exc))
    except _database_errors() as exc:
        return fail(f"cannot read the trace database: {exc}")
    except BrokenPipeError:  # e.g. `sessiontrace traces | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        # main() may run in a process that goes on (a test, a script): close the
        # command's store, or its PostgreSQL connections stay open until collected.
        store: Store | None = getattr(args, "_store", None)
        if store is not None:
            store.close()


if __name__ == "__main__":
    sys.exit(main())
