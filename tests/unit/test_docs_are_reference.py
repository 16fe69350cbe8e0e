"""The project's documents describe the system as it is: none speaks of who worked when, and
the benchmarks' generated figures stay in their own file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".venv", ".git", "node_modules", ".ue-resync"}
WHO_WORKED_WHEN = re.compile(
    r"\bsessions? [0-9]+\b|\b(this|last|previous|first) session's (code|machine|run|work)\b",
    re.IGNORECASE,
)


def documents() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.md") if not SKIP.intersection(p.relative_to(ROOT).parts))


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


def test_performance_md_holds_no_generated_figures() -> None:
    text = (ROOT / "docs" / "performance.md").read_text()
    assert "bench:results" not in text
    assert "## Every figure" not in text
