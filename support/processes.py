"""Every process that tests/, bench/ and the chaos run start: ue-resync (`ue-resync work` or any
other command), the benchmarks' baseline worker, the chaos writers. Each gets a scrubbed
environment (support.env), runs in a directory of the caller's (so no stray .env is read), and
writes its output to a log file (or has it captured, by `run`). A `Slot` holds one process at a
time that is killed and started again, each start with a log of its own."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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


def check_alive(proc: subprocess.Popen[bytes]) -> None:
    """RuntimeError, with the end of its log, if the process has exited."""
    if proc.poll() is not None:
        raise RuntimeError(f"process exited with {proc.returncode}:\n{tail(proc)}")


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for the process to end on its own (e.g. `work --stop-when-empty`); RuntimeError, with
    the end of its log, if it does not within `timeout` (it is killed) or exits other than 0."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise RuntimeError(f"process still running after {timeout:g} s:\n{tail(proc)}") from None
    if code != 0:
        raise RuntimeError(f"process exited with {code}:\n{tail(proc)}")
    return code


def output(proc: subprocess.Popen[bytes]) -> str:
    """Everything the process wrote to its log so far."""
    path: Path | None = getattr(proc, "log_path", None)
    if path is None or not path.exists():
        return ""
    return path.read_text(errors="replace")


def tail(proc: subprocess.Popen[bytes], lines: int = 20) -> str:
    return "\n".join(output(proc).splitlines()[-lines:])


class Slot:
    """A place for one process at a time that is killed and started again (the chaos run's
    daemons and writers). Start n runs `spawn(log, n)`, `log` being a file of its own in
    `workdir` named after `label` ("daemon 0" → daemon-0.n.log); every start's log is kept."""

    def __init__(
        self, label: str, workdir: Path, spawn: Callable[[Path, int], subprocess.Popen[bytes]]
    ) -> None:
        self.label = label
        self.workdir = workdir
        self._spawn = spawn
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None
        # Set when we signal the process, so that its end is not taken for a crash.
        self.expected_exit = False

    def start(self) -> None:
        n = len(self.logs) + 1
        stem = re.sub(r"\W+", "-", self.label).strip("-")
        self.logs.append(self.workdir / f"{stem}.{n}.log")
        self.proc = self._spawn(self.logs[-1], n)
        self.expected_exit = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.expected_exit = True
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if it still runs after `timeout` seconds."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30) -> int | None:
        """As `stop`: SIGTERM, then the exit status (None when it had to be SIGKILLed)."""
        if self.proc is None:
            return None
        if self.alive():
            self.expected_exit = True
        return stop(self.proc, timeout)

    def ended(self) -> str:
        """How the process, no longer running, ended: "exited N" or "killed by SIGNAME"."""
        assert self.proc is not None and self.proc.returncode is not None
        code = self.proc.returncode
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"

    def tail(self, lines: int = 15) -> str:
        """The end of the current start's log."""
        return tail(self.proc, lines) if self.proc is not None else ""
