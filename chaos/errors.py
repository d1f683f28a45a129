"""One exception root; each subclass carries the exit code the contract gives it."""

from __future__ import annotations

from chaos.results import ExitCode


class ChaosError(Exception):
    """Root of every error handshake-chaos reports to a user as one line."""

    exit_code: ExitCode = ExitCode.NOT_STARTED


class UsageError(ChaosError):
    """Bad usage or bad input: a flag, a pid, a file that does not fit."""

    exit_code = ExitCode.USAGE


class DeploymentError(ChaosError):
    """The target or its environment could not be built, started or found."""

    exit_code = ExitCode.NOT_STARTED
