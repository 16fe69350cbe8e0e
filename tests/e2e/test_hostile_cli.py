"""Hostile and broken input through the CLI: malformed UE_RESYNC_* values give one line, exit 2,
never a traceback; a database newer than the code is refused in one line.

How many inputs of each kind were tried is written to the terminal at the end of the module."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from support import processes
from tests.hostile import TRIED
from tests.hostile import report_inputs_tried as report_inputs_tried  # autouse

pytestmark = pytest.mark.e2e

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
        # An unreachable database: settings are read before any connection is tried.
        out = processes.run(
            "postgresql://postgres@127.0.0.1:1/none", "work", cwd=tmp_path, timeout=20, **values
        )
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("ue-resync: "), out.stderr


# -- a schema newer than the code ----------------------------------------------------------------


@pytest.mark.parametrize("command", [["work"], ["migrate"], ["monitor"]])
def test_a_schema_newer_than_the_code_is_refused_in_one_line(
    conn: psycopg.Connection, dsn: str, tmp_path: Path, command: list[str]
) -> None:
    TRIED["schema.newer_than_code"] += 1
    conn.execute(
        "INSERT INTO resync.schema_migrations (version, name, checksum) "
        "VALUES (999, '0999_from_the_future', 'x')"
    )
    out = processes.run(dsn, *command, cwd=tmp_path, timeout=30)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 and "999" in lines[0] and "upgrade ue-resync" in lines[0], out.stderr
    assert out.stdout == ""  # monitor: no figures read through views it may misread
