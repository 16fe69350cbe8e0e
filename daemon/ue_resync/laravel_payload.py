"""Reading the rows Laravel's database queue wrote: pure, no I/O.

A `jobs` or `failed_jobs` payload is JSON whose `data.command` is the job object in PHP's
serialize() format (e.g. `O:28:"App\\Jobs\\ResyncCourseUnitJob":14:{s:15:"\\0*\\0courseUnitId";
i:42;...}`). Only what the import needs is read: the class, the two constructor arguments and
the job's tries. Anything else (an encrypted command, a truncated string) is a PayloadError that
says what is wrong, so the row can be reported and left where it is."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

DEFAULT_REASON = "sync_error_recovery"  # ResyncCourseUnitJob's constructor default


class PayloadError(ValueError):
    """The payload cannot be read; the message says why, in one line."""


@dataclasses.dataclass(frozen=True, slots=True)
class LaravelJob:
    course_unit_id: int
    reason: str
    max_tries: int | None
    uuid: str | None


def read_job(payload: str, job_class: str) -> LaravelJob | None:
    """The job a payload carries, or None when it is a job of another class."""
    try:
        data = json.loads(payload)
    except ValueError:
        raise PayloadError(f"payload is not JSON: {payload[:40]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise PayloadError("payload has no data object: not a Laravel queue payload")
    name = data["data"].get("commandName") or data.get("displayName")
    if not isinstance(name, str):
        raise PayloadError("payload names no job class (data.commandName)")
    if name.lstrip("\\") != job_class.lstrip("\\"):
        return None
    command = data["data"].get("command")
    if not isinstance(command, str) or not command.startswith("O:"):
        raise PayloadError(
            "data.command is not a serialized object (an encrypted job, ShouldBeEncrypted?)"
        )
    obj = unserialize(command.encode("utf-8"))
    if not isinstance(obj, PhpObject):
        raise PayloadError("data.command is not a serialized object")
    unit = obj.props.get("courseUnitId")
    if isinstance(unit, str) and unit.isdigit():
        unit = int(unit)
    if not isinstance(unit, int) or isinstance(unit, bool) or unit <= 0:
        raise PayloadError(f"courseUnitId is {unit!r}, expected a positive integer")
    reason = obj.props.get("reason", DEFAULT_REASON)
    if not isinstance(reason, str) or not reason:
        raise PayloadError(f"reason is {reason!r}, expected a string")
    tries = data.get("maxTries")
    uuid = data.get("uuid")
    return LaravelJob(
        course_unit_id=unit,
        reason=reason,
        max_tries=tries if isinstance(tries, int) and tries > 0 else None,
        uuid=uuid if isinstance(uuid, str) else None,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class PhpObject:
    class_name: str
    props: dict[str, Any]  # names without PHP's "\0*\0" / "\0Class\0" visibility prefixes


def unserialize(data: bytes) -> Any:
    """PHP's unserialize() for scalars, arrays and objects; references read as None."""
    reader = _Reader(data)
    value = reader.value()
    if reader.pos != len(data):
        raise PayloadError(f"serialized command has trailing data at byte {reader.pos}")
    return value


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _fail(self, what: str) -> PayloadError:
        return PayloadError(f"serialized command unreadable at byte {self.pos}: {what}")

    def _until(self, stop: bytes) -> bytes:
        end = self.data.find(stop, self.pos)
        if end < 0:
            raise self._fail(f"expected {stop.decode()!r}, found the end")
        chunk, self.pos = self.data[self.pos : end], end + 1
        return chunk

    def _expect(self, token: bytes) -> None:
        if self.data[self.pos : self.pos + len(token)] != token:
            raise self._fail(f"expected {token.decode()!r}")
        self.pos += len(token)

    def _int(self, stop: bytes) -> int:
        chunk = self._until(stop)
        try:
            return int(chunk)
        except ValueError:
            raise self._fail(f"{chunk[:20]!r} is not an integer") from None

    def _string(self) -> str:
        length = self._int(b":")
        self._expect(b'"')
        raw = self.data[self.pos : self.pos + length]
        if len(raw) != length:
            raise self._fail("string runs past the end")
        self.pos += length
        self._expect(b'"')
        return raw.decode("utf-8", "replace")

    def value(self) -> Any:
        kind = self.data[self.pos : self.pos + 2]
        self.pos += 2
        if kind == b"N;":
            return None
        if kind == b"b:":
            return self._int(b";") != 0
        if kind == b"i:":
            return self._int(b";")
        if kind == b"d:":
            chunk = self._until(b";")
            try:
                return float(chunk)
            except ValueError:
                raise self._fail(f"{chunk[:20]!r} is not a number") from None
        if kind == b"s:":
            text = self._string()
            self._expect(b";")
            return text
        if kind in (b"r:", b"R:"):
            self._int(b";")
            return None
        if kind == b"E:":
            text = self._string()
            self._expect(b";")
            return text
        if kind == b"a:":
            return dict(self._members(self._int(b":")))
        if kind == b"O:":
            name = self._string()
            self._expect(b":")
            props = {_plain_name(str(k)): v for k, v in self._members(self._int(b":"))}
            return PhpObject(name, props)
        raise self._fail(f"unknown type {kind[:1]!r}")

    def _members(self, count: int) -> list[tuple[Any, Any]]:
        self._expect(b"{")
        members = [(self.value(), self.value()) for _ in range(count)]
        self._expect(b"}")
        return members


def _plain_name(name: str) -> str:
    """A property name without its visibility prefix (protected "\\0*\\0", private "\\0C\\0")."""
    return name.rsplit("\0", 1)[-1] if name.startswith("\0") else name


def exception_summary(text: str) -> tuple[str, str]:
    """(class, message) from the first line of Laravel's `(string) $exception`."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    name, sep, message = first.partition(": ")
    if not sep or " " in name:
        return "Exception", first
    return name, message


def exception_messages(text: str) -> str:
    """Laravel's exception text without its stack traces: each exception of the chain on its
    line(s) ("PDOException: ... in file:line", "Next Illuminate\\...\\QueryException: ...")."""
    kept: list[str] = []
    in_trace = False
    for line in text.strip().splitlines():
        if line == "Stack trace:":
            in_trace = True
        elif line.startswith("Next ") or not in_trace:
            in_trace = False
            kept.append(line)
    return "\n".join(kept)


def sqlstate_of(text: str) -> str | None:
    """The SQLSTATE a Laravel QueryException names ("SQLSTATE[55P03]: ..."), if any."""
    found = re.search(r"SQLSTATE\[([0-9A-Z]{5})\]", text)
    return found.group(1) if found else None
