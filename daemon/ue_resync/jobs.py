"""Job payloads and the pure decisions about them: parse a payload, name the UE a job is for,
decide what a failed attempt leads to. No I/O here: everything a decision needs comes in as an
argument."""

from __future__ import annotations

import dataclasses
import json
import re
from enum import StrEnum

ENTRYPOINT = "resync_course_unit"
MAX_UNIT_ID = 2**63 - 1


class InvalidJob(ValueError):
    """The job cannot be run at all (bad payload): it fails at once, no retry."""


@dataclasses.dataclass(frozen=True, slots=True)
class ResyncPayload:
    course_unit_id: int
    reason: str


def parse_payload(raw: bytes | None) -> ResyncPayload:
    """The payload of a `resync_course_unit` job, or InvalidJob saying what is wrong with it."""
    if raw is None:
        raise InvalidJob("payload is empty: expected JSON with course_unit_id")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        preview = raw[:40].decode("utf-8", "backslashreplace")
        raise InvalidJob(f"payload is not JSON: {preview!r}") from None
    if not isinstance(data, dict):
        raise InvalidJob(f"payload is JSON {type(data).__name__}, expected an object")
    given = data.get("course_unit_id")
    unit = _integer(given)
    if unit is None:
        raise InvalidJob(f"course_unit_id must be an integer, got {given!r}")
    if not 0 < unit <= MAX_UNIT_ID:
        raise InvalidJob(f"course_unit_id out of range: {unit}")
    reason = data.get("reason")
    return ResyncPayload(unit, reason if isinstance(reason, str) and reason else "unknown")


def unit_id(value: object) -> int | None:
    """The UE a job names, as a payload or the queue's headers give it (an integer, or its
    digits as text), or None when it names none a resync could run on."""
    unit = _integer(value)
    return unit if unit is not None and 0 < unit <= MAX_UNIT_ID else None


def _integer(value: object) -> int | None:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class Outcome(StrEnum):
    RETRY = "retrying"
    FAIL = "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class RetryDecision:
    outcome: Outcome
    delay: float = 0.0  # seconds until the next attempt, when outcome is RETRY


def retry_decision(attempt: int, tries: int, backoff: tuple[float, ...]) -> RetryDecision:
    """What a failed `attempt` (1 = first) leads to, Laravel's way: `tries` counts attempts, and
    the delay after attempt n is backoff[n-1], the last one repeating. With tries 3 and backoff
    30,60,120 a failing job runs at 0, +30 s, +60 s, then fails."""
    if attempt >= tries:
        return RetryDecision(Outcome.FAIL)
    return RetryDecision(Outcome.RETRY, backoff[min(attempt, len(backoff)) - 1])
