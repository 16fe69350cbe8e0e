"""auto_explain, read from the client: the plan of a statement and of every statement run
under it (trigger functions included), as NOTICEs."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg


def nested_plans(
    conn: psycopg.Connection,
    statement: str,
    params: Iterable[object] = (),
    settings: Iterable[tuple[str, str]] = (),
    check: str | None = None,
) -> list[str]:
    """Run `statement` in a transaction with auto_explain logging every plan to the client;
    `settings` are applied first (session-wide), and `check`, if given, runs in the same
    transaction after the statement, which must return one row of 'ok'."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    for name, value in (
        ("auto_explain.log_min_duration", "0"),
        ("auto_explain.log_nested_statements", "on"),
        ("auto_explain.log_level", "notice"),
        ("client_min_messages", "notice"),
        *settings,
    ):
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    with conn.transaction():
        conn.execute(statement, tuple(params))
        if check is not None:
            assert conn.execute(check).fetchall() == [("ok",)], check
    return [n for n in notices if n.startswith("duration:")]
