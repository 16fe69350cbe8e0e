"""A real Prometheus (Debian's) scraping a real `ue-resync work --metrics-port` after jobs ran:
every series docs/operations.md lists, with the values the database shows; every expression of
the Grafana dashboard and of the alert rules evaluates, and the alerts that fire are the ones
resync.alerts shows."""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from support import catalogue, processes
from support.poll import wait_for
from tests.prometheus import DASHBOARD, OPERATIONS, RULES, Prometheus, free_port
from ue_resync import __version__

pytestmark = pytest.mark.e2e

# Above every default threshold of resync.alerts: 11 jobs failed (> 10), each of their UEs
# failed 3 times (>= 3), 101 delayed + 1 due jobs queued (> 100), the due one waiting 10 min.
GOOD, POISONED, DELAYED = 3, 11, 101


def documented_metrics() -> dict[str, str]:
    """name -> type, from the metrics table of docs/operations.md."""
    rows = re.findall(r"^\| `(ue_resync_[a-z0-9_]+)` \| (\w+) \|", OPERATIONS.read_text(), re.M)
    return dict(rows)


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def rules() -> list[dict[str, str]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def one(conn: psycopg.Connection, sql: str) -> float:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return float(row[0])


@contextlib.contextmanager
def worker(dsn: str, root: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`ue-resync work` serving its metrics on `port`: 3 tries, no backoff, logs in `root`."""
    proc = processes.spawn_daemon(
        dsn,
        cwd=root,
        log=root / "daemon.log",
        UE_RESYNC_SLEEP="0.2",
        UE_RESYNC_TRIES="3",
        UE_RESYNC_BACKOFF="0",
        UE_RESYNC_MAX_TIME="0",
        UE_RESYNC_METRICS_PORT=str(port),
    )
    try:
        yield proc
    finally:
        processes.stop(proc)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, int]]:
    port = free_port()
    root = tmp_path / "prometheus"
    root.mkdir()
    prom = Prometheus(root, f"127.0.0.1:{port}")
    try:
        wait_for(prom.ready, 30, "prometheus to be ready", interval=0.2)
        yield prom, port
    finally:
        prom.stop()


def test_prometheus_scrapes_what_the_database_shows(conn, dsn, login, tmp_path, prometheus):
    prom, port = prometheus
    good = [catalogue.unit(conn) for _ in range(GOOD)]
    poisoned = [catalogue.unit(conn, code=f"POISON{n:03d}") for n in range(POISONED)]
    for u in good + poisoned:
        catalogue.element(conn, u, credits=2)
    catalogue.install_poison(conn)
    delayed = [catalogue.unit(conn) for _ in range(DELAYED)]
    conn.execute(
        "SELECT resync.request(u, 'later', interval '1 hour') FROM unnest(%s::bigint[]) u",
        (delayed,),
    )
    conn.execute("SELECT resync.request(%s, 'later', interval '1 hour')", (delayed[0],))
    held = conn.execute(
        "SELECT resync.request(%s, 'held', interval '1 hour')", (catalogue.unit(conn),)
    ).fetchone()[0]
    conn.execute(
        "UPDATE resync.pgqueuer SET execute_after = now() - interval '10 minutes' WHERE id = %s",
        (held,),
    )
    # As operations.md runs the daemon: a login role granted resync_worker only.
    as_worker = login("worker", "resync_worker").dsn
    with psycopg.connect(dsn) as holder, worker(as_worker, tmp_path, port):
        # Due, but locked: the daemon's dequeue skips it, so it waits past due_job_wait.
        holder.execute("SELECT 1 FROM resync.pgqueuer WHERE id = %s FOR UPDATE", (held,))
        # Scraped before the jobs run, so that rates and histograms see them arrive.
        prom.wait_value("count_over_time(ue_resync_enqueued_total[1m]) >= bool 2", 1)
        conn.execute("SELECT resync.request(u) FROM unnest(%s::bigint[]) u", (good + poisoned,))
        wait_for(
            lambda: (
                one(conn, "SELECT count(*) FROM resync.pgqueuer WHERE status = 'failed'")
                == POISONED
                and one(conn, "SELECT count(*) FROM resync.job_runs WHERE outcome = 'succeeded'")
                == GOOD
            ),
            60,
            "the good jobs to succeed and the poisoned ones to fail",
        )
        check_values(prom, conn)
        check_every_documented_series(prom)
        check_alerts_match_the_view(prom, conn)
        check_every_expression_evaluates(prom)
    log = (tmp_path / "daemon.log").read_text()
    assert "housekeeping failed" not in log and "permission denied" not in log, log


def check_values(prom: Prometheus, conn: psycopg.Connection) -> None:
    status = conn.execute(
        "SELECT queued, due, delayed, running, failed_total, failed_last_hour "
        "FROM resync.queue_status"
    ).fetchone()
    assert status == (DELAYED + 1, 1, DELAYED, 0, POISONED, POISONED)
    expected = {
        # What this daemon did: the run history and the queue's log hold the same.
        'ue_resync_resyncs_total{outcome="succeeded"}': one(
            conn, "SELECT count(*) FROM resync.job_runs WHERE outcome = 'succeeded'"
        ),
        'ue_resync_resyncs_total{outcome="retrying"}': one(
            conn, "SELECT count(*) FROM resync.job_runs WHERE outcome = 'retrying'"
        ),
        'ue_resync_resyncs_total{outcome="failed"}': one(
            conn, "SELECT count(*) FROM resync.job_runs WHERE outcome = 'failed'"
        ),
        "ue_resync_retries_total": one(
            conn, "SELECT count(*) FROM resync.job_runs WHERE outcome = 'retrying'"
        ),
        "ue_resync_failures_total": one(
            conn, "SELECT count(*) FROM resync.pgqueuer WHERE status = 'failed'"
        ),
        "ue_resync_resync_duration_seconds_count": one(
            conn, "SELECT count(*) FROM resync.job_runs WHERE outcome = 'succeeded'"
        ),
        "ue_resync_start_delay_seconds_count": one(
            conn, "SELECT count(*) FROM resync.pgqueuer_log WHERE status = 'picked'"
        ),
        "ue_resync_reconnects_total": 0,
        # What the database shows.
        "ue_resync_enqueued_total": one(conn, "SELECT last_value FROM resync.pgqueuer_id_seq"),
        'ue_resync_queue_depth{state="queued"}': status[0],
        'ue_resync_queue_depth{state="due"}': status[1],
        'ue_resync_queue_depth{state="delayed"}': status[2],
        'ue_resync_queue_depth{state="running"}': status[3],
        'ue_resync_queue_depth{state="failed"}': status[4],
        "ue_resync_failed_jobs_last_hour": status[5],
        "ue_resync_unit_failures_24h_max": one(
            conn, "SELECT max(value::int) FROM resync.alerts WHERE name = 'unit_failures_24h'"
        ),
        'ue_resync_deferred_jobs{reason="later",sqlstate=""}': DELAYED,
        'ue_resync_deferred_jobs{reason="held",sqlstate=""}': 1,
        "ue_resync_coalesced_events": one(
            conn, "SELECT sum(resync_events - 1) FROM resync.pgqueuer WHERE status = 'queued'"
        ),
    }
    # Every request the test made took a number: the delayed ones, the coalesced one, the
    # held one, the good and poisoned ones.
    assert expected["ue_resync_enqueued_total"] == DELAYED + 1 + 1 + GOOD + POISONED
    assert expected["ue_resync_coalesced_events"] == 1
    assert expected['ue_resync_resyncs_total{outcome="failed"}'] == POISONED
    assert expected["ue_resync_retries_total"] == 2 * POISONED
    assert expected["ue_resync_unit_failures_24h_max"] == 3
    for expr, value in expected.items():
        prom.wait_value(expr, value)
    run_seconds = one(
        conn,
        "SELECT sum(extract(epoch FROM finished_at - started_at)) FROM resync.job_runs "
        "WHERE outcome = 'succeeded'",
    )
    prom.wait_value("ue_resync_resync_duration_seconds_sum", run_seconds, tol=1e-3)
    waited = one(conn, "SELECT extract(epoch FROM oldest_due_age) FROM resync.queue_status")
    prom.wait_value("ue_resync_oldest_due_age_seconds", waited, tol=10)
    beat = one(conn, "SELECT extract(epoch FROM now() - max(heartbeat_at)) FROM resync.workers")
    prom.wait_value("ue_resync_heartbeat_age_seconds", beat, tol=10)
    version = conn.execute("SELECT version FROM resync.workers").fetchone()[0]
    assert version == __version__
    prom.wait_value(f'ue_resync_build_info{{version="{version}"}}', 1)


def check_every_documented_series(prom: Prometheus) -> None:
    documented = documented_metrics()
    assert len(documented) >= 15, documented
    names = {s["__name__"] for s in prom.api("series", **{"match[]": '{__name__=~"ue_resync_.*"}'})}
    for name, kind in documented.items():
        wanted = (
            [f"{name}_{s}" for s in ("bucket", "count", "sum")] if kind == "histogram" else [name]
        )
        assert set(wanted) <= names, f"{name} ({kind}) not scraped: {sorted(names)}"
    metadata = prom.api("metadata")
    for name, kind in documented.items():
        # Scraped as OpenMetrics: a counter's family has no _total, an info's no _info.
        family = name.removesuffix({"counter": "_total", "info": "_info"}.get(kind, ""))
        types = {m["type"] for m in metadata.get(family, [])}
        assert types == {kind}, (name, sorted(metadata))


def check_alerts_match_the_view(prom: Prometheus, conn: psycopg.Connection) -> None:
    view = {
        name
        for (name,) in conn.execute("SELECT DISTINCT name FROM resync.alerts").fetchall()
        if name != "drift"  # no rule: resync.drift reads every UE
    }
    assert view == {"failed_jobs_last_hour", "queued_jobs", "unit_failures_24h", "due_job_wait"}

    def firing() -> set[str] | None:
        alerts = prom.api("alerts")["alerts"]
        names = {a["labels"]["resync_alert"] for a in alerts if a["state"] == "firing"}
        return names if names == view else None

    wait_for(firing, 30, f"the firing rules to be {view}", interval=0.2)


def check_every_expression_evaluates(prom: Prometheus) -> None:
    for expr in dashboard_exprs():
        result = prom.query(expr)
        assert result, f"dashboard: {expr} returns nothing"
        for sample in result:
            assert not math.isnan(float(sample["value"][1])), f"dashboard: {expr} is NaN"
    view_firing = {"failed_jobs_last_hour", "queued_jobs", "unit_failures_24h", "due_job_wait"}
    for rule in rules():
        result = prom.query(rule["expr"])
        fires = rule["labels"]["resync_alert"] in view_firing
        assert bool(result) == fires, (rule["alert"], result)
        # Quiet or not, every series the rule reads is there.
        for selector in re.findall(r"\b(?:ue_resync_[a-z0-9_]+|up)(?:\{[^}]*\})?", rule["expr"]):
            assert prom.query(selector), f"{rule['alert']}: {selector} has no data"


def test_the_rules_thresholds_are_the_views_defaults(conn):
    # resync.alerts name -> its row in resync.thresholds.
    setting = {
        "failed_jobs_last_hour": "failed_jobs_last_hour",
        "queued_jobs": "queued_jobs",
        "unit_failures_24h": "unit_failures_24h",
        "due_job_wait": "due_job_wait",
        "no_live_worker": "worker_heartbeat_fresh",
    }
    defaults = dict(
        conn.execute(
            "SELECT name, CASE WHEN value ~ '^[0-9]+$' THEN value::float8 "
            "ELSE extract(epoch FROM value::interval)::float8 END FROM resync.thresholds"
        ).fetchall()
    )
    checked = set()
    for rule in rules():
        compared = re.search(r"(>=|>) ([0-9.]+)$", rule["expr"])
        if compared is None:  # the target down: no threshold
            continue
        name = rule["labels"]["resync_alert"]
        assert float(compared[2]) == defaults[setting[name]], rule["alert"]
        checked.add(name)
    assert checked == set(setting)
