"""How a command is told to stop: a flag its signal handlers set, and nothing more."""

from __future__ import annotations

import signal
import time
from types import FrameType

from chaos.errors import ChaosError
from chaos.results import ExitCode


class StopFlag:
    """Set by SIGINT/SIGTERM (the handler only records the first signal) or once a deadline passes."""

    def __init__(self, seconds: float | None = None) -> None:
        self.signum: int | None = None
        self._end = None if seconds is None else time.monotonic() + seconds

    def install(self) -> StopFlag:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.set)
        return self

    def set(self, signum: int = signal.SIGINT, _frame: FrameType | None = None) -> None:
        if self.signum is None:
            self.signum = signum

    def is_set(self) -> bool:
        return self.signum is not None or (self._end is not None and time.monotonic() >= self._end)

    def wait(self, timeout: float | None = None) -> bool:
        """Sleeps until set or ``timeout`` seconds passed; True when set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set() and (deadline is None or time.monotonic() < deadline):
            remaining = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            time.sleep(remaining)
        return self.is_set()


class Interrupted(ChaosError):
    """A signal stopped the command before anything was started that would need stopping."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} before the run started")
        self.exit_code = ExitCode(ExitCode.of_signal(signum))
