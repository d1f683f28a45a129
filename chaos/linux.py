"""handshake-chaos runs on Linux, and says so anywhere else rather than failing halfway.

It reads ``/proc`` (which worker holds which connection, pid verification) and sets
``prctl(PR_SET_PDEATHSIG)`` so that nothing it starts outlives it: neither exists elsewhere.
"""

from __future__ import annotations

import sys

from chaos.errors import UsageError


def require_linux(platform: str | None = None) -> None:
    """Raises the one-line usage error (exit 2) on any platform but Linux."""
    platform = platform or sys.platform
    if not platform.startswith("linux"):
        raise UsageError(
            f"handshake-chaos runs on Linux only (it reads /proc and uses prctl); this is {platform}. "
            "Run it on a Linux host, VM or container beside the deployment"
        )
