"""An install by the application's own role on a cluster of its own (the suite's PostgreSQL
version): without CREATEROLE, migrate lists every role to create and changes nothing; without a
superuser, it says which GRANT the rollback of docs/cutover.md needs; once granted, the owning
role turns ue-resync off for its database, as cutover.md's "Going back" says."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from support import catalogue, replication
from support.processes import run as run_cli
from ue_resync.catalogue import create_tables

pytestmark = pytest.mark.e2e

ROLES = ("resync_monitor", "resync_requester", "resync_worker")


@pytest.fixture
def cluster(bindir: Path) -> Iterator[tuple[str, str]]:
    """(superuser DSN, app_owner DSN) of database app, owned by app_owner, who made its tables."""
    with replication.servers(bindir, 1) as [node]:
        with node.connect() as admin:
            admin.execute("CREATE ROLE app_owner LOGIN")
            admin.execute("CREATE DATABASE app OWNER app_owner")
        owner = make_conninfo(node.dsn("app"), user="app_owner")
        with psycopg.connect(owner, autocommit=True) as conn:
            create_tables(conn)
        yield node.dsn("app"), owner


def test_the_owning_role_installs_then_rolls_back(cluster, tmp_path):
    superuser, owner = cluster
    refused = run_cli(owner, "migrate", cwd=tmp_path)
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line == (
        "ue-resync: cannot create the roles resync_monitor, resync_requester, resync_worker "
        "(app_owner lacks CREATEROLE): as a role that has it, run CREATE ROLE resync_monitor "
        "NOLOGIN; CREATE ROLE resync_requester NOLOGIN; CREATE ROLE resync_worker NOLOGIN; "
        "then migrate again; nothing was changed"
    )
    with psycopg.connect(superuser, autocommit=True) as admin:
        assert admin.execute("SELECT to_regnamespace('resync')").fetchone() == (None,)
        for role in ROLES:
            admin.execute(f"CREATE ROLE {role} NOLOGIN")

    installed = run_cli(owner, "migrate", cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    grant = (
        "GRANT SET ON PARAMETER ue_resync.mode, ue_resync.lock_timeout, ue_resync.debounce, "
        "ue_resync.debounce_max_wait TO app_owner"
    )
    assert f"as a superuser, run {grant}" in installed.stdout
    with (
        psycopg.connect(owner, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("ALTER DATABASE app SET ue_resync.mode = 'off'")

    # A superuser's migrate grants it.
    granted = run_cli(superuser, "migrate", cwd=tmp_path)
    assert granted.returncode == 0, granted.stderr
    assert "parameter_grants" in granted.stdout and "may not ALTER" not in granted.stdout

    # docs/cutover.md, "Going back", step 2, as the owning role.
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("ALTER DATABASE app SET ue_resync.mode = 'off'")
    with psycopg.connect(owner, autocommit=True) as conn:
        u = catalogue.unit(conn)
        catalogue.element(conn, u, credits=4)
        assert catalogue.totals(conn, u)[0] == 0  # ue-resync is off for new sessions
        assert conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone() == (0,)
