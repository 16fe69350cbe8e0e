"""Durations as people write and read them: '90', '30s', '2m', '1.5h' in settings, flags and
`ue-resync request --delay`; '850 ms', '3 min 5 s' in logs and the commands' output. Pure: no
I/O, nothing of the database."""

from __future__ import annotations

import re

# Seconds per unit; no unit means seconds, as Laravel's --sleep and --backoff read them.
_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in '90', '30s', '2m', '1.5h', '250ms', '1d'. ValueError says what is accepted."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|min|m|h|d)?\s*", str(text))
    if not match and str(text).strip().startswith("-"):
        raise ValueError(f"a duration cannot be negative: {text!r} (use e.g. 0, 30s, 2m, 1h)")
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90, 30s, 2m, 1h)")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


def human_duration(seconds: float | None) -> str:
    """'850 ms', '12.4 s', '3 min 5 s', '2 h 10 min' — for people, not scripts; '-' for none."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
