"""The `ue-resync` command as an operator runs it: a subprocess against a real server."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from support import catalogue
from support.env import scrubbed_env

pytestmark = pytest.mark.e2e


def _one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def seeded(conn):
    """Two drifted units, a queued request, a delayed one and two failed jobs."""
    a, b, c = (catalogue.unit(conn) for _ in range(3))
    for u in (a, b, c):
        catalogue.element(conn, u, credits=3)
    conn.execute("UPDATE course_units SET credits = 9 WHERE id IN (%s, %s)", (a, b))
    queued = conn.execute("SELECT resync.request(%s)", (a,)).fetchone()[0]
    delayed = conn.execute(
        "SELECT resync.request(%s, 'later', interval '1 hour')", (b,)
    ).fetchone()[0]
    failed = [conn.execute("SELECT resync.request(%s)", (c,)).fetchone()[0]]
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed' WHERE id = %s", (failed[0],))
    failed.append(
        conn.execute(
            "INSERT INTO resync.pgqueuer (priority, entrypoint, status, payload, headers, "
            "resync_unit) VALUES (0, 'resync_course_unit', 'failed', %s, %s, %s) RETURNING id",
            (
                json.dumps({"course_unit_id": b, "reason": "old"}).encode(),
                json.dumps({"course_unit_id": str(b), "reason": "old"}),
                b,
            ),
        ).fetchone()[0]
    )
    return {"units": (a, b, c), "queued": queued, "delayed": delayed, "failed": failed}


def test_monitor_and_failed(cli, seeded):
    out = cli("monitor", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert (status["queued"], status["due"], status["delayed"], status["failed_total"]) == (
        2,
        1,
        1,
        2,
    )
    text = cli("monitor")
    assert text.returncode == 0 and "queued" in text.stdout and "\033[" not in text.stdout
    failed = json.loads(cli("failed", "--json").stdout)
    assert sorted(f["job_id"] for f in failed) == sorted(seeded["failed"])
    listing = cli("failed").stdout
    assert "job_id" in listing.splitlines()[0] and str(seeded["failed"][0]) in listing


def test_retry_forget_flush(cli, conn, seeded):
    first, second = seeded["failed"]
    assert cli("retry", str(first)).returncode == 0
    status = conn.execute(
        "SELECT status::text, attempts FROM resync.pgqueuer WHERE id = %s", (first,)
    ).fetchone()
    assert status == ("queued", 0)
    # The second failed job's UE already has a delayed job: that one takes over, due now.
    out = cli("retry", "all")
    assert out.returncode == 0 and "re-queued 1" in out.stdout
    assert (
        conn.execute("SELECT count(*) FROM resync.pgqueuer WHERE id = %s", (second,)).fetchone()[0]
        == 0
    )
    assert conn.execute(
        "SELECT execute_after <= now() FROM resync.pgqueuer WHERE id = %s", (seeded["delayed"],)
    ).fetchone()[0]
    missing = cli("forget", "999999")
    assert missing.returncode == 1
    assert "no failed job with id 999999" in _one_clean_line(missing.stderr)
    conn.execute("UPDATE resync.pgqueuer SET status = 'failed'")
    assert cli("forget", str(first)).returncode == 0
    out = cli("flush")
    assert out.returncode == 0 and "deleted 2 failed job(s)" in out.stdout
    assert conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone()[0] == 0


def test_clear_asks_unless_forced(cli, conn, seeded):
    refused = cli("clear")
    assert refused.returncode == 2 and "--force" in _one_clean_line(refused.stderr)
    out = cli("clear", "--force")
    assert out.returncode == 0 and "deleted 2 queued job(s)" in out.stdout
    assert str(seeded["queued"]) in out.stdout
    left = conn.execute("SELECT status::text, count(*) FROM resync.pgqueuer GROUP BY 1").fetchall()
    assert left == [("failed", 2)]


def test_request_sync_check(cli, conn, seeded):
    a, _b, c = seeded["units"]
    out = cli("request", str(c), "--reason", "by_hand", "--delay", "2m")
    assert out.returncode == 0, out.stderr
    due = conn.execute(
        "SELECT extract(epoch FROM execute_after - now()) FROM resync.pgqueuer "
        "WHERE status = 'queued' AND headers->>'course_unit_id' = %s",
        (str(c),),
    ).fetchone()[0]
    assert 100 < due <= 120
    bad = cli("request", "987654")
    assert bad.returncode == 1 and "course unit 987654 does not exist" in _one_clean_line(
        bad.stderr
    )
    bad_delay = cli("request", str(c), "--delay", "soon")
    assert bad_delay.returncode == 2 and "not a duration" in _one_clean_line(bad_delay.stderr)
    negative = cli("request", str(c), "--delay=-5m")
    assert negative.returncode == 2
    assert "a duration cannot be negative" in _one_clean_line(negative.stderr)
    # Without the `=`, argparse takes -5m for an option: refused too (usage and error).
    assert cli("request", str(c), "--delay", "-5m").returncode == 2

    drift = cli("check")
    # Drift left: exit 3, each UE with the column that differs, stored → expected.
    assert drift.returncode == 3 and "2 course unit(s) drifted" in drift.stdout
    assert f"UE {a} (" in drift.stdout and "credits 9 → 3" in drift.stdout
    synced = cli("sync", str(a), "--json")
    assert json.loads(synced.stdout)["changes"] == {"credits": [9, 3]}
    assert catalogue.read_unit(conn, a)["last_job_sync"] is not None
    assert "does not exist" in _one_clean_line(cli("sync", "987654").stderr)
    enqueued = cli("check", "--enqueue", "--json")
    assert json.loads(enqueued.stdout)["queued"] == 1  # b is left; a was synced


def test_migrate_and_print_sql(cli, app_dsn):
    env = scrubbed_env(app_dsn)
    first = cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied "), first.stdout
    again = cli("migrate", env=env)
    assert again.returncode == 0 and "applied" not in again.stdout
    assert cli("migrate", "--print-sql", env=env).stdout == ""


def test_errors_are_one_line_and_never_show_the_password(cli, empty_dsn, pg_server):
    none = cli("monitor", env=scrubbed_env(None))
    assert none.returncode == 2 and "no database configured" in _one_clean_line(none.stderr)
    unmigrated = cli("monitor", env=scrubbed_env(empty_dsn))
    assert unmigrated.returncode == 1
    assert "run `ue-resync migrate`" in _one_clean_line(unmigrated.stderr)
    unreachable = cli(
        "monitor",
        env=scrubbed_env("postgresql://someone:s3cr3t-pw@127.0.0.1:1/nothing?connect_timeout=2"),
    )
    line = _one_clean_line(unreachable.stderr)
    assert unreachable.returncode == 1 and "cannot connect" in line and "s3cr3t" not in line
    # libpq's cause is its first line, the hint its second: both, on one line.
    assert "Connection refused; Is the server running" in line
    request = cli("request", "1", env=scrubbed_env(empty_dsn))
    assert request.returncode == 1
    assert "run `ue-resync migrate`" in _one_clean_line(request.stderr)
    wrong = cli("work", env=scrubbed_env(empty_dsn, UE_RESYNC_TRIES="many"))
    assert wrong.returncode == 2 and "invalid setting: tries" in _one_clean_line(wrong.stderr)
    old_schema = cli("work", "--stop-when-empty", env=scrubbed_env(empty_dsn))
    assert old_schema.returncode == 1
    assert "run `ue-resync migrate`" in _one_clean_line(old_schema.stderr)


def test_a_laravel_env_file_is_understood(cli, dsn, tmp_path, pg_server):
    dbname = dsn.split("dbname=")[1].split()[0]
    env_file = tmp_path / "laravel.env"
    env_file.write_text(
        "APP_NAME=Catalogue\nDB_CONNECTION=pgsql\n"
        f"DB_HOST={pg_server.host}\nDB_PORT={pg_server.port}\nDB_DATABASE={dbname}\n"
        f"DB_USERNAME={pg_server.user}\nDB_PASSWORD=\nQUEUE_CONNECTION=database\n"
    )
    out = cli("--env-file", str(env_file), "monitor", "--json", env=scrubbed_env(None))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["queued"] == 0


def test_check_names_the_column_that_differs_and_exits_3(cli, conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=9, cm=118, td=0, tp=0, hours_total=84)
    # Only hours_cm is wrong: credits and hours_total, which the old listing showed, are right.
    conn.execute("UPDATE course_units SET hours_cm = 119 WHERE id = %s", (u,))
    text = cli("check")
    assert text.returncode == 3, text.stderr
    assert f"UE {u} (" in text.stdout and "): hours_cm 119 → 118\n" in text.stdout
    as_json = cli("check", "--json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["drifted"] == [
        {
            "course_unit_id": u,
            "code": catalogue.read_unit(conn, u)["code"],
            "differences": {"hours_cm": [119, 118]},
        }
    ]
    assert cli("check", "--enqueue").returncode == 0  # the drift is being repaired


def test_a_laravel_env_of_another_database_is_refused_and_db_url_is_read(cli, dsn, tmp_path):
    mysql = tmp_path / "mysql.env"
    mysql.write_text("DB_CONNECTION=mysql\nDB_HOST=127.0.0.1\nDB_PORT=3306\nDB_DATABASE=app\n")
    out = cli("--env-file", str(mysql), "monitor", env=scrubbed_env(None))
    assert out.returncode == 2 and "DB_CONNECTION=mysql" in _one_clean_line(out.stderr)
    info = conninfo_to_dict(dsn)
    host = quote(str(info.get("host") or "localhost"), safe="")
    laravel_11 = tmp_path / "laravel11.env"
    laravel_11.write_text(
        f"DB_CONNECTION=pgsql\nDB_URL=pgsql://{info['user']}@{host}:{info.get('port') or 5432}/"
        f"{info['dbname']}\nDB_DATABASE=not_this_one\n"
    )
    out = cli("--env-file", str(laravel_11), "monitor", "--json", env=scrubbed_env(None))
    assert out.returncode == 0, out.stderr


def test_retry_forget_and_failed_take_a_course_unit(cli, conn, seeded):
    a, b, c = seeded["units"]
    failed_c, failed_b = seeded["failed"]
    listing = cli("failed", "--unit", str(b))
    assert listing.returncode == 0, listing.stderr
    assert [int(line.split()[0]) for line in listing.stdout.splitlines()[2:]] == [failed_b]
    assert json.loads(cli("failed", "--unit", str(c), "--json").stdout)[0]["job_id"] == failed_c
    assert cli("failed", "--unit", str(a)).stdout.strip() == f"course unit {a} has no failed job"

    retried = cli("retry", "--unit", str(c))
    assert retried.returncode == 0, retried.stderr
    assert f"re-queued job {failed_c} (course unit {c})" in retried.stdout.splitlines()
    assert conn.execute(
        "SELECT status::text FROM resync.pgqueuer WHERE id = %s", (failed_c,)
    ).fetchone() == ("queued",)
    none = cli("retry", "--unit", str(a))
    assert none.returncode == 1
    assert _one_clean_line(none.stderr) == (
        f"ue-resync: course unit {a} has no failed job (`ue-resync failed` lists them)"
    )
    # The runbooks' mistake, a UE's id given as a job id, says which id retry wants.
    wrong = cli("retry", str(a))
    assert wrong.returncode == 1 and "--unit ID takes a course unit" in _one_clean_line(
        wrong.stderr
    )
    assert cli("retry", str(a), "--unit", str(a)).returncode == 2

    forgotten = cli("forget", "--unit", str(b))
    assert forgotten.returncode == 0, forgotten.stderr
    assert forgotten.stdout.splitlines() == [f"deleted failed job {failed_b} (course unit {b})"]
    assert cli("forget", "--unit", str(b)).returncode == 1


def test_clear_json_without_a_terminal(cli, conn, seeded):
    refused = cli("clear", "--json")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "no terminal to ask on; add --force" in _one_clean_line(refused.stderr)
    out = cli("clear", "--json", "--force")
    assert out.returncode == 0, out.stderr
    assert sorted(r["job_id"] for r in json.loads(out.stdout)) == sorted(
        [seeded["queued"], seeded["delayed"]]
    )
    assert json.loads(cli("clear", "--json", "--force").stdout) == []


def json_types(value: object, found: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """Each key of a JSON document, at any depth, with the JSON types its values take."""
    found = {} if found is None else found
    if isinstance(value, dict):
        for key, item in value.items():
            kind = type(item).__name__ if item is not None else "null"
            found.setdefault(key, set()).add({"float": "number", "int": "number"}.get(kind, kind))
            json_types(item, found)
    elif isinstance(value, list):
        for item in value:
            json_types(item, found)
    return found


def test_every_json_output_gives_a_key_one_type(cli, conn, seeded):
    """The same key (course_unit_id, job_id, queued…) has one JSON type in every command's
    --json output; null stands for a value that is absent."""
    a, _b, _c = seeded["units"]
    conn.execute("UPDATE course_units SET credits = 40 WHERE id = %s", (a,))  # warnings too
    outputs = {
        " ".join(args): json.loads(cli(*args).stdout)
        for args in (
            ("monitor", "--json"),
            ("monitor", "--check", "--json"),
            ("failed", "--json"),
            ("check", "--json"),
            ("sync", str(a), "--json"),
            ("check", "--enqueue", "--json"),
            ("clear", "--force", "--json"),
        )
    }
    by_key: dict[str, dict[str, set[str]]] = {}
    for command, document in outputs.items():
        for key, kinds in json_types(document).items():
            by_key.setdefault(key, {})[command] = kinds - {"null"}
    assert len(by_key["course_unit_id"]) == 5 and len(by_key["job_id"]) == 2, by_key
    mixed = {
        key: commands
        for key, commands in by_key.items()
        if len(set().union(*commands.values())) > 1
    }
    assert not mixed, mixed
    assert set().union(*by_key["course_unit_id"].values()) == {"number"}
