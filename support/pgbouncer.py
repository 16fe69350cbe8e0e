"""Debian's pgbouncer in front of a server: on a free loopback port, with its own ini and auth
files in a temporary directory (the system service is never used).

pgbouncer refuses to run as root: as root it runs as the `postgres` system user (setpriv), or as
the owner of the server's socket directory when the server is reached by a Unix socket."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from psycopg.conninfo import make_conninfo

from support.poll import WaitTimeout, wait_for

RUN_AS = "postgres"


class NotInstalled(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


def as_unprivileged(user: str = RUN_AS) -> list[str]:
    """The command prefix that drops root (PostgreSQL's tools and pgbouncer refuse it)."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]


def _user_for(backend_host: str) -> str:
    """Who can reach the server: a Unix socket's directory may admit its owner only (the embedded
    server keeps its socket in its data directory)."""
    if backend_host.startswith("/"):
        return pwd.getpwuid(os.stat(backend_host).st_uid).pw_name
    return RUN_AS


@dataclasses.dataclass
class Pgbouncer:
    port: int
    mode: str
    process: subprocess.Popen[bytes]
    log: Path

    def dsn(self, dbname: str, user: str = "postgres") -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, dbname=dbname, user=user)

    def route(self, direct_dsn: str) -> str:
        """`direct_dsn` (a libpq string or URL to the test server) through this pgbouncer."""
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(direct_dsn)
        params.pop("password", None)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _ini(
    backend_host: str, backend_port: int, port: int, mode: str, pool_size: int, d: Path
) -> str:
    return "\n".join(
        [
            "[databases]",
            # Every database name goes to the same server: the tests' fresh databases included.
            f"* = host={backend_host} port={backend_port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {d / 'users.txt'}",
            "admin_users = postgres",
            f"pool_mode = {mode}",
            f"default_pool_size = {pool_size}",
            "max_client_conn = 500",
            # psycopg sends none of these, but other clients of the same tests might.
            "ignore_startup_parameters = extra_float_digits",
            # No check query: pgbouncer 1.18 now and then hands the check's own result to the
            # client whose query follows it on that server connection (docs/operations.md,
            # "Behind pgbouncer"). Checked before every reuse (server_check_delay = 0), it
            # crossed a result a few times in a hundred rounds of bench.latency.
            "server_check_query =",
            "",
        ]
    )


@contextlib.contextmanager
def running(
    backend_host: str, backend_port: int, mode: str = "transaction", pool_size: int = 4
) -> Iterator[Pgbouncer]:
    """A pgbouncer in `mode` (transaction or session) in front of host:port, stopped on exit.
    Raises NotInstalled without pgbouncer."""
    exe = binary()
    if exe is None:
        raise NotInstalled("pgbouncer is not installed (apt-get install pgbouncer)")
    with tempfile.TemporaryDirectory(prefix="ue-resync-pgbouncer-") as tmp:
        d = Path(tmp)
        d.chmod(0o755)
        port = free_port()
        (d / "users.txt").write_text('"postgres" ""\n')
        (d / "pgbouncer.ini").write_text(_ini(backend_host, backend_port, port, mode, pool_size, d))
        log = d / "pgbouncer.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*as_unprivileged(_user_for(backend_host)), exe, str(d / "pgbouncer.ini")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        bouncer = Pgbouncer(port, mode, proc, log)
        try:
            _wait_listening(bouncer)
            yield bouncer
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_listening(bouncer: Pgbouncer, timeout: float = 15.0) -> None:
    def listening() -> bool:
        if bouncer.process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited at start:\n{bouncer.output()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", bouncer.port), 1):
            return True
        return False

    try:
        wait_for(listening, timeout, "pgbouncer to listen")
    except WaitTimeout:
        raise RuntimeError(
            f"pgbouncer not listening after {timeout} s:\n{bouncer.output()}"
        ) from None
