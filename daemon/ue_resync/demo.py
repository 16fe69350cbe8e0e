"""`ue-resync demo`: the whole system on an embedded PostgreSQL, in about half a minute.

It never touches a configured database: it starts its own server in --data-dir, creates a
database there, migrates it, loads a small catalogue, starts the real daemon as a subprocess and
walks through the paths an operator should know, narrating what happens and why."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from ue_resync import catalogue, embedded, ledger, migrate, output
from ue_resync.queries import query
from ue_resync.settings import Settings

DBNAME = "ue_resync_demo"
T = TypeVar("T")

PROGRAMMES = {
    "L1 Informatique": [
        "Algorithmique",
        "Programmation",
        "Mathématiques discrètes",
        "Architecture",
        "Anglais",
        "Systèmes",
        "Bases du web",
        "Logique",
        "Analyse",
        "Projet tutoré",
        "Méthodologie",
        "Culture numérique",
        "Statistiques",
        "Communication",
        "Électronique",
        "Réseaux",
        "Algèbre linéaire",
    ],
    "L3 Mathématiques": [
        "Topologie",
        "Intégration",
        "Probabilités",
        "Algèbre",
        "Analyse numérique",
        "Géométrie",
        "Optimisation",
        "Équations différentielles",
        "Statistique inférentielle",
        "Calcul formel",
        "Histoire des sciences",
        "Anglais scientifique",
        "Stage",
        "Modélisation",
        "Théorie des nombres",
        "Analyse complexe",
    ],
    "M1 Data Science": [
        "Apprentissage automatique",
        "Bases de données",
        "Visualisation",
        "Big data",
        "Éthique des données",
        "Séries temporelles",
        "Traitement du langage",
        "Vision",
        "Optimisation convexe",
        "Statistique bayésienne",
        "Projet",
        "Droit du numérique",
        "Cloud",
        "Graphes",
        "Recherche opérationnelle",
        "Insertion pro",
        "Anglais",
    ],
}
ELEMENT_KINDS = ["Cours", "TD", "TP", "Projet", "Atelier"]


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(n: int, title: str) -> None:
    _say(f"\n=== {n}. {title} ===")


def _wait(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo: timed out waiting for {what}")
        pause.wait(0.05)


def load_catalogue(conn: psycopg.Connection, seed: int = 7) -> tuple[int, int]:
    """About 50 UEs of three programmes, each with 2 to 4 ECUE; returns (units, elements)."""
    rng = random.Random(seed)
    codes = itertools.count(101)
    units = elements = 0
    with conn.transaction():
        for programme, titles in PROGRAMMES.items():
            prefix = "".join(word[0] for word in programme.split())
            for title in titles:
                code = f"{prefix}{next(codes)}"
                unit_id = conn.execute(
                    "INSERT INTO course_units (code, name) VALUES (%s, %s) RETURNING id",
                    (code, f"{title} ({programme})"),
                ).fetchone()[0]  # type: ignore[index]
                units += 1
                for k in range(rng.randint(2, 4)):
                    cm, td, tp = (
                        rng.choice([6, 8, 10, 12, 15]),
                        rng.choice([6, 9, 12]),
                        rng.choice([0, 6, 9, 12]),
                    )
                    conn.execute(
                        "INSERT INTO course_unit_elements (course_unit_id, code, name, credits,"
                        " hours_cm, hours_td, hours_tp, hours_total)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            unit_id,
                            f"{code}-{k + 1}",
                            f"{ELEMENT_KINDS[k]} de {title}",
                            rng.choice([1, 1.5, 2]),
                            cm,
                            td,
                            tp,
                            cm + td + tp,
                        ),
                    )
                    elements += 1
    return units, elements


def _show_unit(conn: psycopg.Connection, unit_id: int) -> str:
    row = conn.execute(
        "SELECT code, credits, hours_cm, hours_td, hours_tp, hours_total, elements_count,"
        " hours_distribution, last_job_sync IS NOT NULL FROM course_units WHERE id = %s",
        (unit_id,),
    ).fetchone()
    assert row is not None
    code, credits, cm, td, tp, total, n, dist, by_job = row
    return (
        f"{code}: {credits} ECTS, CM {cm} / TD {td} / TP {tp} = {total} h, {n} ECUE, "
        f"distribution {dist}, last_job_sync {'set' if by_job else 'empty'}"
    )


@contextlib.contextmanager
def _daemon(uri: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "UE_RESYNC_DATABASE_URL": uri,
        # The demo scales the 30/60/120 s backoff down 20 times, to watch a retry happen.
        "UE_RESYNC_TIME_SCALE": "0.05",
        "UE_RESYNC_SLEEP": "1",
        "UE_RESYNC_LOG_FORMAT": "text",
        "UE_RESYNC_MAX_TIME": "0",
    }
    proc = subprocess.Popen([sys.executable, "-m", "ue_resync", "work"], env=env)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _scalar(conn: psycopg.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params or None).fetchone()
    return row[0] if row else None


def run_demo(settings: Settings, data_dir: Path, keep: bool) -> int:
    embedded.load(data_dir.expanduser().resolve().parent)  # NotInstalled before any output
    if settings.has_database():
        _say("(a database is configured; the demo ignores it and uses its own embedded server)")
    _step(1, f"embedded PostgreSQL in {data_dir}")
    server = embedded.start(data_dir, keep=keep)
    try:
        with psycopg.connect(server.uri(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {DBNAME}")
            version = admin.info.server_version
        uri = server.uri(DBNAME)
        _say(f"PostgreSQL {version // 10000}.{version % 10000} is up; database {DBNAME}")
        return _walkthrough(server, uri)
    finally:
        if keep:
            _say(
                f"\nThe server keeps running (--keep). Connect with:\n  "
                f"{server.psql_command(DBNAME)}"
            )
        else:
            server.stop()


def _walkthrough(server: embedded.EmbeddedServer, uri: str) -> int:
    with psycopg.connect(uri, autocommit=True) as conn:
        _step(2, "the application's tables, then migrations")
        catalogue.create_tables(conn)
        applied = migrate.apply(conn)
        _say(f"applied {len(applied)} migrations; schema at version {ledger.check_current(conn)}")

        _step(3, "a small catalogue")
        units, elements = load_catalogue(conn)
        _say(
            f"loaded {units} UEs and {elements} ECUE; every UE was synced inline by the "
            f"triggers: drift = {_scalar(conn, 'SELECT count(*) FROM resync.drift')}"
        )

        with _daemon(uri):
            _wait(
                lambda: _scalar(
                    conn, "SELECT count(*) FROM resync.workers WHERE stopped_at IS NULL"
                ),
                20,
                "the daemon to start",
            )
            _say("the daemon (ue-resync work) is running and listening")

            unit_a, elem_a = conn.execute(
                "SELECT course_unit_id, id FROM course_unit_elements ORDER BY id LIMIT 1"
            ).fetchone()  # type: ignore[misc]
            _step(4, "a normal edit is synced inline, in the writer's transaction")
            _say("before: " + _show_unit(conn, unit_a))
            conn.execute(
                "UPDATE course_unit_elements SET hours_tp = hours_tp + 6, "
                "hours_total = hours_total + 6 WHERE id = %s",
                (elem_a,),
            )
            _say("after:  " + _show_unit(conn, unit_a))

            _step(5, "an edit while another session holds the UE row: deferred, then resynced")
            conn.execute(
                "INSERT INTO resync.error_policy (sqlstate_pattern, reason_prefix, delay,"
                " note) VALUES ('55P03', 'sync_error', interval '3 seconds', 'demo')"
                " ON CONFLICT (sqlstate_pattern) DO UPDATE SET delay = excluded.delay"
            )
            _say("(the demo sets lock_not_available to a 3 s delay in resync.error_policy)")
            unit_b, elem_b = conn.execute(
                "SELECT course_unit_id, id FROM course_unit_elements ORDER BY id OFFSET 5 LIMIT 1"
            ).fetchone()  # type: ignore[misc]
            with psycopg.connect(uri) as holder:
                holder.execute("SELECT 1 FROM course_units WHERE id = %s FOR UPDATE", (unit_b,))
                started = time.monotonic()
                conn.execute(
                    "UPDATE course_unit_elements SET credits = credits + 1 WHERE id = %s", (elem_b,)
                )
                _say(
                    f"the writer committed after {1000 * (time.monotonic() - started):.0f} ms "
                    "without waiting for the lock; the job it queued:"
                )
                job = conn.execute(
                    "SELECT id, headers ->> 'reason', round(extract(epoch FROM execute_after -"
                    " now()))::int FROM resync.pgqueuer WHERE headers ->> 'course_unit_id' = "
                    "%s::text AND status = 'queued'",
                    (unit_b,),
                ).fetchone()
                _say(f"  job {job[0]}, reason {job[1]}, due in {job[2]} s")  # type: ignore[index]
                holder.rollback()
            _say("the other session released the row; waiting for the daemon...")
            _wait(
                lambda: _scalar(
                    conn, "SELECT last_job_sync IS NOT NULL FROM course_units WHERE id = %s", unit_b
                ),
                30,
                "the deferred resync",
            )
            _say("resynced: " + _show_unit(conn, unit_b))

            _step(6, "a manual request from psql")
            unit_c = _scalar(conn, "SELECT id FROM course_units ORDER BY id OFFSET 10 LIMIT 1")
            sql = (
                f"INSERT INTO resync.requests (course_unit_id, reason) "
                f"VALUES ({unit_c}, 'manual_trigger');"
            )
            _say(f"  {sql}")
            conn.execute(sql)
            _wait(
                lambda: _scalar(
                    conn, "SELECT last_job_sync IS NOT NULL FROM course_units WHERE id = %s", unit_c
                ),
                15,
                "the manual resync",
            )
            _say("done: " + _show_unit(conn, unit_c))

            _step(7, "a resync that keeps failing: retried 30 s / 60 s later (scaled), then failed")
            unit_d = _scalar(conn, "SELECT id FROM course_units ORDER BY id OFFSET 20 LIMIT 1")
            conn.execute(
                "ALTER TABLE course_units ADD CONSTRAINT demo_credits_at_most_30 "
                "CHECK (credits <= 30) NOT VALID"
            )
            conn.execute("SET ue_resync.mode = 'off'")
            conn.execute(
                "INSERT INTO course_unit_elements (course_unit_id, code, name, credits)"
                " VALUES (%s, 'BIG', 'An oversized element', 40)",
                (unit_d,),
            )
            conn.execute("RESET ue_resync.mode")
            _say("(a CHECK constraint now refuses the 40-credit total this UE would get)")
            failed_job = _scalar(conn, "SELECT resync.request(%s, 'demo_failure')", unit_d)
            _wait(
                lambda: _scalar(
                    conn, "SELECT count(*) FROM resync.failed_jobs WHERE job_id = %s", failed_job
                ),
                30,
                "the job to fail",
            )
            for attempt, outcome, error in conn.execute(
                "SELECT attempt, outcome, error FROM resync.job_runs WHERE job_id = %s ORDER BY id",
                (failed_job,),
            ):
                _say(f"  attempt {attempt}: {outcome} — {error}")

        _step(8, "ue-resync monitor, ue-resync failed")
        with conn.cursor(row_factory=dict_row) as cur:
            status = cur.execute(query("queue_status")).fetchone()
            assert status is not None
            _say(output.monitor_text(status))
            _say("")
            _say(output.failed_text(cur.execute(query("failed_jobs")).fetchall()))
    _say(f"\nConnect to the demo database with:\n  {server.psql_command(DBNAME)}")
    return 0
