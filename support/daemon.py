"""ue-resync as a subprocess: the daemon (`ue-resync work`) or any other command, with a scrubbed
environment (support.env), in a directory of the caller's (so no stray .env is read), its output
in a log file or captured."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from support.env import scrubbed_env

UE_RESYNC = (sys.executable, "-m", "ue_resync")


def spawn(
    dsn: str | None,
    *args: str,
    cwd: Path,
    log: Path | None = None,
    command: Sequence[str] = UE_RESYNC,
    env: dict[str, str] | None = None,
    **settings: str,
) -> subprocess.Popen[bytes]:
    """Start `command ARGS` (default `python -m ue_resync ARGS`) against `dsn`, stdout and stderr
    to `log` (default cwd/<argv[0]>-<ns>.log, kept as `proc.log_path`). `settings` are
    UE_RESYNC_* variables; `env` replaces the scrubbed environment whole."""
    if log is None:
        log = cwd / f"{args[0] if args else 'ue-resync'}-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, *args],
            env=env if env is not None else scrubbed_env(dsn, **settings),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def spawn_daemon(
    dsn: str,
    *args: str,
    cwd: Path,
    log: Path | None = None,
    command: Sequence[str] = UE_RESYNC,
    **settings: str,
) -> subprocess.Popen[bytes]:
    """`ue-resync work ARGS` against `dsn`, as spawn."""
    env = scrubbed_env(dsn, **settings)
    return spawn(dsn, "work", *args, cwd=cwd, log=log, command=command, env=env)


def run(
    dsn: str | None,
    *args: str,
    cwd: Path,
    command: Sequence[str] = UE_RESYNC,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
    **settings: str,
) -> subprocess.CompletedProcess[str]:
    """Run `command ARGS` to its end, output captured as text."""
    return subprocess.run(
        [*command, *args],
        env=env if env is not None else scrubbed_env(dsn, **settings),
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int | None:
    """SIGTERM (the daemon drains what it holds) and its exit status; None when it lingered past
    `timeout` and had to be SIGKILLed."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, if it still runs, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def output(proc: subprocess.Popen[bytes]) -> str:
    """Everything the process wrote to its log so far."""
    path: Path | None = getattr(proc, "log_path", None)
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace")


def tail(proc: subprocess.Popen[bytes], lines: int = 20) -> str:
    return "\n".join(output(proc).splitlines()[-lines:])
