"""Durations as users type them: ``45s``, ``10m``, ``1h30m``, ``90`` (seconds)."""

from __future__ import annotations

import re

from chaos.errors import UsageError

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises UsageError with the offending text otherwise."""
    cleaned = text.strip().lower()
    try:
        seconds = float(cleaned)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds:
            raise UsageError(f"duration must be a non-negative number, got {text!r}")
        return seconds
    position, total = 0, 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not cleaned or position != len(cleaned):
        raise UsageError(f"bad duration {text!r} (use e.g. 45s, 10m, 1h30m)")
    return total
