"""loguru set-up: readable lines on a terminal, JSON lines for journald and files, the old
Laravel tags kept as fields so existing log searches still match. pgqueuer's stdlib logging is
routed through the same sink."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from loguru import logger

if TYPE_CHECKING:
    from loguru import Record

# The old ResyncCourseUnitJob logged under these two tags; searches for them keep working.
TAGS = {"tag": "Resynchronisation différée", "job_class": "ResyncCourseUnitJob"}

_TEXT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[component]}</cyan> "
)


def text_format(record: Record) -> str:
    """A line as people read it: time, level, component, then `[job 12, UE 42]` for a line about
    a job (the ids bound with `logger.bind(job_id=…, course_unit_id=…)`), then the message. The
    JSON lines carry the same ids as fields, and this line as their `text`."""
    extra = record["extra"]
    ids = []
    if extra.get("job_id") is not None:
        ids.append("job {extra[job_id]}")
    if extra.get("course_unit_id") is not None:
        ids.append("UE {extra[course_unit_id]}")
    about = f"[{', '.join(ids)}] " if ids else ""
    return _TEXT + about + "{message}\n{exception}"


class _Intercept(logging.Handler):
    """Hands stdlib records (pgqueuer's) to loguru at their level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(component=record.name).opt(exception=record.exc_info).log(
            level, record.getMessage()
        )


def under_journald() -> bool:
    """systemd sets JOURNAL_STREAM when stderr is connected to the journal."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup(
    fmt: Literal["auto", "text", "json"] = "auto",
    level: str = "INFO",
    log_file: Path | None = None,
    rotation: str = "50 MB",
    retention: str = "30 days",
) -> None:
    logger.remove()
    logger.configure(extra={"component": "ue-resync", **TAGS})
    as_json = fmt == "json" or (fmt == "auto" and under_journald())
    if as_json:
        logger.add(
            sys.stderr,
            level=level,
            format=text_format,
            serialize=True,
            backtrace=False,
            diagnose=False,
        )
    else:
        logger.add(
            sys.stderr,
            level=level,
            format=text_format,
            colorize=sys.stderr.isatty(),
            backtrace=False,
            diagnose=False,
        )
    if log_file is not None:
        logger.add(
            log_file,
            level=level,
            format=text_format,
            serialize=True,
            rotation=rotation,
            retention=retention,
            backtrace=False,
            diagnose=False,
            enqueue=True,
        )
    logging.basicConfig(handlers=[_Intercept()], level=logging.WARNING, force=True)
    # pgqueuer logs each job failure with a traceback; we log our own line per failure.
    logging.getLogger("pgqueuer").setLevel(logging.CRITICAL)


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (PostgreSQL's DETAIL and HINT follow on others), for
    a log line or a one-line error."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def whole_message(exc: BaseException) -> str:
    """Every line of an error's message on one line, `; ` between them: libpq puts the cause of
    a failed connection on its first line (`Connection refused`) and a hint on the next."""
    lines = [" ".join(line.split()) for line in str(exc).splitlines()]
    return "; ".join(line for line in lines if line) or type(exc).__name__
