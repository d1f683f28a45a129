"""Durations as Locust reads them (``45s``, ``10m``, ``1h30m``, ``90``), with Locust's own parser.

``soak`` hands its ``--duration`` to a Locust process as ``-t``: parsing it with the same
function means no duration is accepted here that Locust then rejects. The parser's module
is loaded on its own, because importing the ``locust`` package monkey-patches the standard
library for gevent, which the command-line process must not do.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import cache
from pathlib import Path

from chaos.errors import UsageError


@cache
def _locust_parse_timespan() -> Callable[[str], int]:
    spec = importlib.util.find_spec("locust")
    if spec is None or spec.origin is None:
        raise UsageError("locust is not installed")
    module_spec = importlib.util.spec_from_file_location(
        "_handshake_chaos_locust_timespan", Path(spec.origin).parent / "util" / "timespan.py"
    )
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    parse: Callable[[str], int] = module.parse_timespan
    return parse


def parse_timespan(text: str, flag: str = "duration") -> int:
    """Seconds in ``text``; one clear UsageError otherwise."""
    try:
        return _locust_parse_timespan()(text.strip())
    except ValueError:
        raise UsageError(f"{flag}: bad duration {text!r} (use e.g. 45s, 10m, 1h30m or whole seconds)") from None
