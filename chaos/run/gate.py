"""The gate: pass, fail, or inconclusive, with the contract's exit codes."""

from __future__ import annotations

import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from chaos.errors import UsageError
from chaos.results import VERDICT_EXIT_CODES, ErrorRow, ExitCode, GateResult, SignalRecord, Verdict


@dataclass(frozen=True)
class GatePolicy:
    """``allow`` tolerates up to N errors of a signature (e.g. a known, accepted failure)."""

    allow: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, allowances: Iterable[str]) -> GatePolicy:
        allow: dict[str, int] = {}
        for item in allowances:
            signature, _, count = item.partition("=")
            if not signature.strip() or not count.strip().isdigit():
                raise UsageError(f"--allow takes SIGNATURE=COUNT, got {item!r}")
            allow[signature.strip()] = int(count)
        return cls(allow)


def verdict(name: Verdict, reason: str, failing: Iterable[str] = (), exit_code: int | None = None) -> GateResult:
    code = int(VERDICT_EXIT_CODES[name]) if exit_code is None else exit_code
    return GateResult(name, code, reason, list(failing))


def interrupted(signum: int) -> GateResult:
    """Stopped by a signal before the run's end, with no error found so far: 128 + the signal's number."""
    name = signal.Signals(signum).name
    return verdict(
        "interrupted", f"stopped by {name} before the run's end; no error found so far", (), ExitCode.of_signal(signum)
    )


def decide(
    error_rows: Iterable[ErrorRow],
    landed_with_pending: int,
    policy: GatePolicy,
    interrupted_by: int | None = None,
    uncaught: Iterable[str] = (),
) -> GateResult:
    """The verdict. ``uncaught``: scenarios of the run that no signal found pending: a pass must have
    exercised every state it claims to have tested, so without them it is inconclusive."""
    per_signature: dict[str, int] = {}
    for row in error_rows:
        per_signature[row.signature] = per_signature.get(row.signature, 0) + row.count
    failing = sorted(sig for sig, count in per_signature.items() if count > policy.allow.get(sig, 0) and count > 0)
    if failing:
        total = sum(per_signature[sig] for sig in failing)
        return verdict("fail", f"{total} handshake-time shutdown errors: {', '.join(failing)}", failing)
    if interrupted_by is not None:
        return interrupted(interrupted_by)
    if landed_with_pending == 0:
        return verdict("inconclusive", "no signal landed on a worker holding pending handshakes")
    missing = sorted(uncaught)
    if missing:
        return verdict(
            "inconclusive",
            f"no signal caught a pending handshake of {', '.join(missing)} "
            f"({landed_with_pending} signals landed with others pending)",
        )
    return verdict("pass", f"{landed_with_pending} signals landed with pending handshakes, no errors")


@dataclass(frozen=True)
class EvidencePolicy:
    """When a pass can no longer turn into a fail: ``signals`` signals, each caught at least
    ``pending`` handshakes, none found an error, and every one of their windows settled."""

    signals: int = 5
    pending: int = 10


def settled(
    error_rows: Iterable[ErrorRow],
    records: Iterable[SignalRecord],
    policy: GatePolicy,
    evidence: EvidencePolicy,
    last_error_time: float | None = None,
    since: float = 0.0,
    scenarios: tuple[str, ...] = (),
) -> str | None:
    """Why the verdict can no longer change (the run may stop now), or None while it still can.

    A signal's window has settled once the deployment recovered from it: its workers exited (so
    every handshake they held has its answer) and the log said what they left. A fail needs the
    windows of the signals that could have found its errors (those sent before the last error
    was counted, ``last_error_time``) to have settled; a pass needs its evidence settled. Windows
    of later signals may still be open: the controller keeps its rate, so one nearly always is.
    Only the test under way counts (signals and errors from ``since`` on: a new Start in the web
    UI is not stopped by the evidence of the test before it).
    """
    sent = [record for record in records if not record.dry_run and record.time >= since]
    result = decide(error_rows, 0, policy)
    if result.verdict == "fail":
        if last_error_time is None or last_error_time < since:
            return None
        finders = [record for record in sent if last_error_time is None or record.time <= last_error_time]
        if any(not record.settled for record in finders):
            return None
        return f"verdict settled: fail ({result.reason}), the windows of the {len(finders)} signals before it settled"
    if not scenarios or len(scenarios) == 1:
        strong = [record for record in sent if record.settled and record.pending >= evidence.pending]
        if len(strong) < evidence.signals:
            return None
        return (
            f"verdict settled: pass ({len(strong)} signals caught at least {evidence.pending} pending handshakes "
            "each, no error, their windows settled)"
        )
    # Mixed: every scenario needs its own evidence; each has its share of the pending handshakes.
    share = max(1, evidence.pending // len(scenarios))
    for name in scenarios:
        strong = [r for r in sent if r.settled and r.pending_by_scenario.get(name, 0) >= share]
        if len(strong) < evidence.signals:
            return None
    return (
        f"verdict settled: pass (for each of {len(scenarios)} scenarios, {evidence.signals} signals caught at least "
        f"{share} of its handshakes pending; no error, their windows settled)"
    )
