"""Hostile and broken input: what an operator or a buggy client can send, fuzzed.

  requests   resync.requests rows: NULL, negative, zero, huge and unknown ids; reasons long,
             empty, in other scripts, right-to-left, emoji, control characters; run_at in the far
             past or future, 'infinity', garbage. Each is queued, or refused at INSERT with a
             clear SQL error and nothing queued.
  jobs       raw INSERTs into resync.pgqueuer (random payload bytes, JSON of every wrong shape,
             invalid UTF-8, unknown entrypoints) while a real daemon runs: each ends failed with
             a readable error (or done, for a well-formed job on a UE that does not exist), the
             daemon stays up, and a good job inserted with them is done promptly.
  settings   malformed UE_RESYNC_* values through settings.load() (fuzzed) and through the CLI:
             one line, exit 2, never a traceback.
  schema     a database newer than the code: `ue-resync work` refuses with one line.

How many inputs of each kind were tried is written to the terminal at the end of the module."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import catalog
from tests.e2e.conftest import cli_env
from ue_resync.settings import SettingsError, load

TRIED: Counter[str] = Counter()
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz(examples: int) -> settings:
    return settings(FUZZ, max_examples=examples)


@pytest.fixture(scope="module", autouse=True)
def report_inputs_tried(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and TRIED:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nhostile inputs tried: {sum(TRIED.values())} ({kinds})")


# -- resync.requests ---------------------------------------------------------------------------

DEFAULT = object()
unit_ids = st.one_of(
    st.tuples(st.just("id_null"), st.none()),
    st.tuples(st.just("id_negative"), st.integers(-(2**63), -1)),
    st.tuples(st.just("id_zero"), st.just(0)),
    st.tuples(st.just("id_unknown"), st.integers(10**6, 2**63 - 1)),
    st.tuples(
        st.just("id_beyond_bigint"), st.integers(2**63, 2**80) | st.integers(-(2**80), -(2**63) - 1)
    ),
    st.tuples(st.just("id_existing"), st.just(-1)),  # replaced by a real UE's id
)
control = st.characters(min_codepoint=1, max_codepoint=31) | st.sampled_from("\x7f\u200b\ufeff")
reasons = st.one_of(
    st.tuples(st.just("reason_default"), st.just(DEFAULT)),
    st.tuples(st.just("reason_null"), st.none()),
    st.tuples(st.just("reason_empty"), st.just("")),
    st.tuples(st.just("reason_sane"), st.from_regex(r"[a-z0-9_.:/ -]{1,100}", fullmatch=True)),
    st.tuples(st.just("reason_long"), st.text("abc", min_size=101, max_size=5000)),
    st.tuples(
        st.just("reason_other_script"), st.sampled_from(["réessai", "повтор", "再同期", "ΑΒΓ"])
    ),
    st.tuples(
        st.just("reason_rtl"),
        st.sampled_from(["مزامنة", "סנכרון", "a\u202eb", "\u200fabc", "x\u202bשלום\u202c"]),
    ),
    st.tuples(
        st.just("reason_emoji"), st.text(st.sampled_from("😀🔥👍🏽🧪 a"), min_size=1, max_size=30)
    ),
    st.tuples(
        st.just("reason_control"),
        st.tuples(st.text("ab", max_size=5), control, st.text("ab", max_size=5)).map("".join),
    ),
    st.tuples(
        st.just("reason_any_text"),
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300
        ),
    ),
)
run_ats = st.one_of(
    st.tuples(st.just("run_at_default"), st.just(DEFAULT)),
    st.tuples(st.just("run_at_null"), st.none()),
    st.tuples(
        st.just("run_at_extreme"),
        st.sampled_from(
            [
                "infinity",
                "-infinity",
                "4713-01-01 BC",
                "0001-01-01",
                "294276-12-31 23:59:59+00",
                "294277-01-01",
                "epoch",
                "yesterday",
                "tomorrow",
                "now",
            ]
        ),
    ),
    st.tuples(st.just("run_at_garbage"), st.sampled_from(["", "soon", "2024-13-45", "∞", "1e9"])),
    st.tuples(
        st.just("run_at_date"),
        st.datetimes(min_value=dt.datetime(1, 1, 2)).map(lambda d: d.isoformat() + "+00"),
    ),
)
# What a refused request may raise: data exceptions (22), integrity violations (23), a value of
# the wrong type (42804). Never an internal error, never our own code failing (P0001, XX000).
CLEAR_CLASSES = ("22", "23")


def test_fuzzed_requests_are_queued_or_refused_clearly(conn: psycopg.Connection) -> None:
    unit = catalog.unit(conn)
    seen: Counter[str] = Counter()

    @fuzz(250)
    @given(unit_ids, reasons, run_ats)
    def request(uid: tuple[str, Any], reason: tuple[str, Any], run_at: tuple[str, Any]) -> None:
        kinds = (uid[0], reason[0], run_at[0])
        for k in kinds:
            seen[k] += 1
            TRIED[f"requests.{k}"] += 1
        value = unit if uid[0] == "id_existing" else uid[1]
        cols, marks, params = ["course_unit_id"], ["%s"], [value]
        for name, (_, v) in (("reason", reason), ("run_at", run_at)):
            if v is not DEFAULT:
                cols.append(name)
                marks.append("%s")
                params.append(v)
        before = conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone()[0]
        try:
            row = conn.execute(
                f"INSERT INTO resync.requests ({', '.join(cols)}) VALUES ({', '.join(marks)}) "
                "RETURNING job_id, run_at::text",
                params,
            ).fetchone()
        except psycopg.Error as exc:
            message = str(exc).strip()
            assert exc.sqlstate and (
                exc.sqlstate[:2] in CLEAR_CLASSES or exc.sqlstate == "42804"
            ), f"{kinds}: unclear error [{exc.sqlstate}] {message}"
            assert message and len(message.splitlines()[0]) < 300, f"{kinds}: {message!r}"
            after = conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone()[0]
            assert after == before, f"{kinds}: refused, yet a job was queued"
            seen["refused"] += 1
            return
        # Accepted: a queued job for that very UE, due at run_at (or now, when in the past).
        job_id, stored_run_at = row
        job = conn.execute(
            "SELECT status::text, headers ->> 'course_unit_id', "
            # Due at run_at, or at the request's time when run_at is past.
            "execute_after = %(run_at)s::timestamptz "
            "OR execute_after BETWEEN %(run_at)s::timestamptz AND now(), "
            "execute_after > now() + interval '100 years' "
            "FROM resync.pgqueuer WHERE id = %(job)s",
            {"run_at": stored_run_at, "job": job_id},
        ).fetchone()
        assert job is not None and job[0] == "queued" and job[1] == str(value), (kinds, job)
        assert job[2], (kinds, stored_run_at)
        # Never due (more than a century ahead, or 'infinity'): refused since finding 3.
        assert not job[3], (kinds, stored_run_at)
        seen["accepted"] += 1
        conn.execute("DELETE FROM resync.pgqueuer WHERE id = %s", (job_id,))

    request()
    assert seen["accepted"] and seen["refused"], dict(seen)
    print(f"requests: {dict(seen)}")


# -- raw jobs in the queue, a daemon running -----------------------------------------------------

ENTRYPOINT = "resync_course_unit"
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
wrong_ids = st.one_of(
    st.text(max_size=20).filter(lambda s: not s.isdigit()),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.integers(-(2**70), 0),
    st.integers(2**63, 2**70),
)
garbage_jobs = st.one_of(
    st.tuples(st.just("payload_random_bytes"), st.just(ENTRYPOINT), st.binary(max_size=200)),
    st.tuples(st.just("payload_null"), st.just(ENTRYPOINT), st.none()),
    st.tuples(
        st.just("payload_invalid_utf8"),
        st.just(ENTRYPOINT),
        st.sampled_from([b'\xff\xfe{"course_unit_id": 1}', b'{"course_unit_id": "\xc3\x28"}']),
    ),
    st.tuples(
        st.just("payload_json_not_object"),
        st.just(ENTRYPOINT),
        (json_junk.filter(lambda v: not isinstance(v, dict))).map(lambda v: json.dumps(v).encode()),
    ),
    st.tuples(
        st.just("payload_no_unit"),
        st.just(ENTRYPOINT),
        st.dictionaries(
            st.text(max_size=10).filter(lambda k: k != "course_unit_id"), json_junk, max_size=4
        ).map(lambda d: json.dumps(d).encode()),
    ),
    st.tuples(
        st.just("payload_wrong_unit_type"),
        st.just(ENTRYPOINT),
        wrong_ids.map(lambda v: json.dumps({"course_unit_id": v, "reason": "fuzz"}).encode()),
    ),
    st.tuples(
        st.just("payload_unknown_unit"),
        st.just(ENTRYPOINT),
        st.integers(10**9, 2**63 - 1).map(lambda v: json.dumps({"course_unit_id": v}).encode()),
    ),
    st.tuples(
        st.just("entrypoint_unknown"),
        st.text(min_size=1, max_size=60).filter(lambda e: e != ENTRYPOINT and "\x00" not in e),
        st.binary(max_size=50) | st.none(),
    ),
)


def start_daemon(dsn: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ue_resync", "work"],
            env=cli_env(dsn, UE_RESYNC_SLEEP="0.2", UE_RESYNC_TIME_SCALE="0.01"),
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_garbage_jobs_fail_readably_while_good_jobs_run_promptly(
    conn: psycopg.Connection, dsn: str, tmp_path: Path
) -> None:
    log = tmp_path / "daemon.log"
    daemon = start_daemon(dsn, log)
    inserted: dict[int, str] = {}
    refused: Counter[str] = Counter()
    waits: list[float] = []
    try:
        catalog.wait_for(
            lambda: conn.execute(
                "SELECT count(*) FROM resync.workers WHERE stopped_at IS NULL"
            ).fetchone()[0],
            30,
            "the daemon to start",
        )

        @fuzz(60)
        @given(st.lists(garbage_jobs, min_size=1, max_size=6), st.integers(-(2**31), 2**31 - 1))
        def batch(jobs: list[tuple[str, str, bytes | None]], priority: int) -> None:
            # A good job on a drifted UE, queued with the garbage, must be done promptly.
            good = catalog.unit(conn)
            catalog.element(conn, good, credits=2)
            conn.execute("UPDATE course_units SET credits = 0 WHERE id = %s", (good,))
            with conn.transaction():
                for kind, entrypoint, payload in jobs:
                    TRIED[f"jobs.{kind}"] += 1
                    try:
                        with conn.transaction():
                            job = conn.execute(
                                "INSERT INTO resync.pgqueuer (priority, entrypoint, status, "
                                "payload, headers) VALUES (%s, %s, 'queued', %s, NULL) "
                                "RETURNING id",
                                (priority, entrypoint, payload),
                            ).fetchone()[0]
                        inserted[job] = kind
                    except psycopg.Error as exc:
                        assert exc.sqlstate and exc.sqlstate[:2] in ("22", "23"), exc
                        refused[kind] += 1
                good_job = conn.execute(
                    "SELECT resync.request(%s, 'good_job')", (good,)
                ).fetchone()[0]
            queued_at = time.monotonic()
            catalog.wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM resync.job_runs WHERE job_id = %s "
                        "AND outcome = 'succeeded'",
                        (good_job,),
                    ).fetchone()[0]
                    or daemon.poll() is not None
                ),
                10,
                "the good job",
            )
            assert daemon.poll() is None, log.read_text()[-3000:]
            waits.append(time.monotonic() - queued_at)
            assert catalog.totals(conn, good)[0] == 2

        batch()

        # Every garbage job ends: failed with a readable error, or (a well-formed job for a UE
        # that does not exist) done as missing_unit. Unknown entrypoints are failed by the
        # daemons' housekeeping, every 5 s.
        catalog.wait_for(
            lambda: (
                not conn.execute(
                    "SELECT count(*) FROM resync.pgqueuer WHERE id = ANY(%s) "
                    "AND status IN ('queued', 'picked')",
                    (list(inserted),),
                ).fetchone()[0]
            ),
            30,
            "every garbage job to end",
        )
        rows = conn.execute(
            "SELECT j.id, coalesce(q.status::text, 'gone'), r.outcome, r.error "
            "FROM unnest(%s::bigint[]) j(id) "
            "LEFT JOIN resync.pgqueuer q ON q.id = j.id "
            "LEFT JOIN LATERAL (SELECT outcome, error FROM resync.job_runs h "
            "  WHERE h.job_id = j.id ORDER BY h.id DESC LIMIT 1) r ON true",
            (list(inserted),),
        ).fetchall()
        outcomes = {r[0]: r[1:] for r in rows}
        ended: Counter[str] = Counter()
        for job, (status, outcome, error) in outcomes.items():
            kind = inserted[job]
            if kind == "payload_unknown_unit":
                assert (status, outcome) == ("gone", "missing_unit"), (job, kind, status, outcome)
                assert "does not exist" in error
            elif kind == "entrypoint_unknown":
                # The entrypoint is quoted, stripped of control characters (finding 4).
                assert (status, outcome) == ("failed", "invalid"), (job, kind, status, outcome)
                assert error.startswith("unknown entrypoint "), (job, error)
                assert "\n" not in error, (job, error)
            else:
                assert (status, outcome) == ("failed", "invalid"), (job, kind, status, outcome)
                assert error and "\n" not in error and len(error) < 600, (job, kind, error)
            ended[f"{status}/{outcome}"] += 1
        assert daemon.poll() is None, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(30)
        else:
            code = daemon.returncode
    assert code == 0, log.read_text()[-3000:]
    print(
        f"jobs: {len(inserted)} inserted ({dict(ended)}), refused at insert {dict(refused)}; "
        f"good jobs done in max {max(waits):.2f} s"
    )
    assert max(waits) < 5, waits


# -- settings ------------------------------------------------------------------------------------

NUMERIC = (
    "SLEEP",
    "TRIES",
    "MAX_TIME",
    "TIMEOUT",
    "CONCURRENCY",
    "BATCH_SIZE",
    "HEARTBEAT_TIMEOUT",
    "TIME_SCALE",
    "METRICS_PORT",
    "DB_PORT",
)
OTHER = ("BACKOFF", "LOG_FORMAT", "LOG_LEVEL", "STOP_WHEN_EMPTY")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("UE_RESYNC_", "DB_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


@fuzz(300)
@given(
    st.sampled_from(NUMERIC + OTHER),
    st.one_of(
        st.text(max_size=30).filter(lambda s: "\x00" not in s),
        st.sampled_from(
            [
                "-1",
                "0",
                "abc",
                "",
                " ",
                "1e400",
                "nan",
                "inf",
                "-inf",
                "x,y",
                ",",
                "1,,2",
                "0x10",
                "1_000",
                "99999999999999999999",
                "xml",
                "TRUE",
                "maybe",
            ]
        ),
        st.integers(-(10**6), 10**6).map(str),
        st.floats().map(str),
    ),
)
def test_fuzzed_settings_load_or_fail_in_one_line(clean_env: None, name: str, value: str) -> None:
    key = name if name.startswith("DB_") else f"UE_RESYNC_{name}"
    TRIED[f"settings.load.{name}"] += 1
    os.environ[key] = value
    try:
        loaded = load()
    except SettingsError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("invalid setting"), str(exc)
        return
    finally:
        del os.environ[key]
    # Accepted: the value is one the daemon can use.
    assert 0 < loaded.sleep <= 3600 and 1 <= loaded.tries <= 100
    assert loaded.timeout > 0 and 1 <= loaded.concurrency <= 64 and 0 < loaded.time_scale <= 1
    assert all(b >= 0 for b in loaded.backoff) and loaded.backoff


BAD_ENV = [
    {"UE_RESYNC_TRIES": "-1"},
    {"UE_RESYNC_TRIES": "abc"},
    {"UE_RESYNC_TRIES": "0"},
    {"UE_RESYNC_BACKOFF": "x,y"},
    {"UE_RESYNC_BACKOFF": ","},
    {"UE_RESYNC_BACKOFF": "-5"},
    {"UE_RESYNC_SLEEP": "0"},
    {"UE_RESYNC_SLEEP": "nan"},
    {"UE_RESYNC_TIMEOUT": "inf"},
    {"UE_RESYNC_LOG_FORMAT": "xml"},
    {"UE_RESYNC_LOG_LEVEL": "VERBOSE"},
    {"UE_RESYNC_CONCURRENCY": "1000"},
    {"UE_RESYNC_TIME_SCALE": "2"},
    {"UE_RESYNC_METRICS_PORT": "70000"},
    {"UE_RESYNC_STOP_WHEN_EMPTY": "maybe"},
    {"UE_RESYNC_DATABASE_URL": "", "DB_PORT": "abc", "DB_DATABASE": "x"},
]
# Printed a traceback until 844555f (docs/reliability.md, Findings).
FORMERLY_BROKEN = [
    pytest.param(
        {"UE_RESYNC_LOG_FILE": "/proc/no-such-dir/ue.log"},
        id="log_file_unwritable",
    ),
    pytest.param(
        {"UE_RESYNC_LOG_FILE": "{tmp}/ue.log", "UE_RESYNC_LOG_ROTATION": "banana"},
        id="log_rotation",
    ),
    pytest.param(
        {"UE_RESYNC_LOG_FILE": "{tmp}/ue.log", "UE_RESYNC_LOG_RETENTION": "-5"},
        id="log_retention",
    ),
    pytest.param(
        {"UE_RESYNC_METRICS_PORT": "9", "UE_RESYNC_METRICS_BIND": "999.1.1.1"},
        id="metrics_bind",
    ),
    pytest.param(
        {"UE_RESYNC_METRICS_PORT": "{busy}"},
        id="metrics_port_in_use",
    ),
]


@pytest.mark.parametrize(
    "env",
    [pytest.param(e, id="-".join(f"{k}={v}" for k, v in e.items())) for e in BAD_ENV]
    + FORMERLY_BROKEN,
)
def test_the_cli_refuses_bad_settings_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        values = {k: v.format(tmp=tmp_path, busy=busy.getsockname()[1]) for k, v in env.items()}
        for k in env:
            TRIED[f"settings.cli.{k}"] += 1
        out = subprocess.run(
            [sys.executable, "-m", "ue_resync", "work"],
            # An unreachable database: settings are read before any connection is tried.
            env=cli_env("postgresql://postgres@127.0.0.1:1/none", **values),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=20,
        )
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("ue-resync: "), out.stderr


# -- a schema newer than the code ---------------------------------------------------------------


@pytest.mark.parametrize("command", [["work"], ["migrate"], ["monitor"]])
def test_a_schema_newer_than_the_code_is_refused_in_one_line(
    conn: psycopg.Connection, dsn: str, tmp_path: Path, command: list[str]
) -> None:
    TRIED["schema.newer_than_code"] += 1
    conn.execute(
        "INSERT INTO resync.schema_migrations (version, name, checksum) "
        "VALUES (999, '0999_from_the_future', 'x')"
    )
    out = subprocess.run(
        [sys.executable, "-m", "ue_resync", *command],
        env=cli_env(dsn),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = out.stderr.strip().splitlines()
    if command == ["monitor"]:
        # Reading the queue needs no particular schema version: it may answer.
        assert "Traceback" not in out.stderr, out.stderr
        return
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 and "999" in lines[0] and "upgrade ue-resync" in lines[0], out.stderr
