"""Builders the tests share: records by keyword, with defaults, so a new field breaks nothing silently."""

from __future__ import annotations

from typing import Any

from chaos.results import SignalRecord


def signal_record(id: int, **fields: Any) -> SignalRecord:  # noqa: A002 -- the record's own field name
    """A worker TERM that caught nothing, unless ``fields`` say otherwise."""
    defaults: dict[str, Any] = {
        "time": float(id),
        "worker_pid": 100 + id,
        "role": "worker",
        "signal": "TERM",
        "pending": 0,
        "dry_run": False,
    }
    return SignalRecord(id=id, **(defaults | fields))
