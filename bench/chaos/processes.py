"""The processes of a chaos run: daemons (`python -m ue_resync work`, each through its own proxy
link) and writers (`python -m bench.chaos.writer`), started and stopped through support.daemon,
each logging to a file of the work dir."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.chaos.proxy import Link
from support import daemon
from support.env import ROOT as ROOT

# The daemons' settings: backoffs of 30/60/120 s become 0.3/0.6/1.2 s, a job held by a dead
# daemon is taken over after 2 s, and the poll fallback is 0.5 s.
DAEMON_ENV = {
    "UE_RESYNC_TIME_SCALE": "0.01",
    "UE_RESYNC_HEARTBEAT_TIMEOUT": "2",
    "UE_RESYNC_SLEEP": "0.5",
    "UE_RESYNC_MAX_TIME": "0",
    "UE_RESYNC_LOG_FORMAT": "text",
}


class Daemon:
    """One daemon slot: the process in it is killed and replaced; the proxy link stays."""

    def __init__(self, index: int, link: Link, dsn: str, workdir: Path) -> None:
        self.index = index
        self.link = link
        self.dsn = dsn
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.starts = 0
        self.expected_exit = False

    def start(self) -> None:
        self.starts += 1
        path = self.workdir / f"daemon-{self.index}-{self.starts}.log"
        self.logs.append(path)
        self.proc = daemon.spawn_daemon(self.dsn, cwd=self.workdir, log=path, **DAEMON_ENV)
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
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then the exit status (None when it had to be SIGKILLed)."""
        if self.proc is None:
            return None
        if self.alive():
            self.expected_exit = True
        return daemon.stop(self.proc, timeout)

    def tail(self, lines: int = 15) -> str:
        return daemon.tail(self.proc, lines) if self.proc is not None else ""


class WriterProc:
    """One writer slot. A writer that crashes is started again in the same slot, with files of
    its own (writer-I-KIND.N.jsonl and .err); records() reads every start's."""

    def __init__(self, index: int, kind: str, config: dict[str, Any], workdir: Path) -> None:
        self.index = index
        self.kind = kind
        self.workdir = workdir
        self.config = {**config, "kind": kind}
        self.proc: subprocess.Popen[bytes] | None = None
        self.outs: list[Path] = []
        self.crashes: list[str] = []

    @property
    def out(self) -> Path:
        return self.outs[-1]

    @property
    def err(self) -> Path:
        return self.out.with_suffix(".err")

    def start(self) -> None:
        n = len(self.outs) + 1
        self.outs.append(self.workdir / f"writer-{self.index}-{self.kind}.{n}.jsonl")
        config = {**self.config, "out": str(self.out), "seed": self.config["seed"] * 10 + n}
        self.proc = daemon.spawn(
            None,
            json.dumps(config),
            cwd=ROOT,
            log=self.err,
            command=(sys.executable, "-m", "bench.chaos.writer"),
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then the exit status (None when it had to be SIGKILLed)."""
        assert self.proc is not None
        return daemon.stop(self.proc, timeout)

    def records(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Every start's committed (and unknown-outcome) transactions, and their summaries
        added up. A start that crashed may end on a transaction it was committing ("pending":
        its outcome unknown) or on half a line (dropped)."""
        lines: list[dict[str, Any]] = []
        summary: Counter[str] = Counter()
        for out in self.outs:
            pending = None
            for line in out.read_text().splitlines() if out.exists() else []:
                try:
                    data = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the half line a crash left
                pending = data.get("pending")  # any later line says how that COMMIT ended
                if "summary" in data:
                    summary.update(data["summary"])
                elif pending is None and "rolled_back" not in data:
                    lines.append(data)
            if pending is not None:
                lines.append({**pending, "t": pending["b"], "a": 1})
        return lines, dict(summary)

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def death(self) -> str:
        """How a writer that is no longer running ended: its exit status (or the signal that
        killed it), whether it wrote its summary, and the end of its log."""
        assert self.proc is not None
        code = self.proc.returncode
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}"
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        wrote = "wrote its summary" if lines and '"summary"' in lines[-1] else "no summary"
        return f"{how}, {wrote}; its log:\n{self.stderr()[-2000:] or '(empty)'}"
