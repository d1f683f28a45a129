"""One exception root; each subclass carries the exit code the SPEC gives it."""

from __future__ import annotations


class ChaosError(Exception):
    """Root of every error handshake-chaos reports to a user as one line."""

    exit_code = 4


class UsageError(ChaosError):
    """Bad usage or bad input: a flag, a pid, a file that does not fit."""

    exit_code = 2


class TargetError(ChaosError):
    """The target or its environment could not be built, started or found."""

    exit_code = 4
