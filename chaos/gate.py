"""The gate: pass, fail, or inconclusive, with the SPEC's exit codes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos.errors import UsageError

PASS, FAIL, INCONCLUSIVE, ERROR = "pass", "fail", "inconclusive", "error"
EXIT_CODES = {PASS: 0, FAIL: 1, INCONCLUSIVE: 3, ERROR: 4}


@dataclass(frozen=True)
class GatePolicy:
    """``allow`` tolerates up to N errors of a signature (e.g. a known, accepted failure)."""

    allow: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, allowances: Iterable[str]) -> GatePolicy:
        allow: dict[str, int] = {}
        for item in allowances:
            signature, _, count = item.partition("=")
            if not signature or not count.isdigit():
                raise UsageError(f"--allow takes SIGNATURE=COUNT, got {item!r}")
            allow[signature.strip()] = int(count)
        return cls(allow)


@dataclass(frozen=True)
class GateResult:
    verdict: str
    exit_code: int
    reason: str
    failing: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "exit_code": self.exit_code, "reason": self.reason, "failing": self.failing}


def decide(error_rows: Iterable[Mapping[str, Any]], landed_with_pending: int, policy: GatePolicy) -> GateResult:
    per_signature: dict[str, int] = {}
    for row in error_rows:
        per_signature[row["signature"]] = per_signature.get(row["signature"], 0) + int(row["count"])
    failing = tuple(
        sorted(sig for sig, count in per_signature.items() if count > policy.allow.get(sig, 0) and count > 0)
    )
    if failing:
        total = sum(per_signature[sig] for sig in failing)
        reason = f"{total} handshake-time shutdown errors: {', '.join(failing)}"
        return GateResult(FAIL, EXIT_CODES[FAIL], reason, failing)
    if landed_with_pending == 0:
        return GateResult(
            INCONCLUSIVE, EXIT_CODES[INCONCLUSIVE], "no signal landed on a worker holding pending handshakes"
        )
    return GateResult(
        PASS, EXIT_CODES[PASS], f"{landed_with_pending} signals landed with pending handshakes, no errors"
    )
