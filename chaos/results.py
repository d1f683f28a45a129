"""What a run produces, defined once: verdicts, exit codes, outcomes, exit kinds, and the typed
run summary (``summary.json``) and matrix result (``matrix.json``).

Every other module speaks these names; nothing else spells out the keys of a summary.
``to_json``/``from_json`` round-trip through plain JSON, and ``json_schema`` derives the
JSON Schema that ``docs/summary.schema.json`` holds (a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

# -- vocabulary ------------------------------------------------------------------------

Verdict = Literal["pass", "fail", "inconclusive", "interrupted", "error"]
CellStatus = Literal["ran", "skipped", "error"]
CellVerdict = Literal["pass", "fail", "inconclusive", "interrupted", "error", "skipped"]
Side = Literal["server", "client"]
Role = Literal["worker", "master"]
# How a real deploy stops a server, as the controller reproduces it (docs/deploy-shapes.md).
Mode = Literal["worker-term", "worker-int", "master-ttou", "master-hup", "master-term", "rollout"]
ExposureSource = Literal["sockets", "worker", "both", "none"]
ExitKind = Literal["clean", "signalled", "nonzero", "crash", "timeout", "killed", "unknown"]
# uvicorn's websocket implementations (--ws); "auto" lets uvicorn pick among those installed.
WsImplementation = Literal["wsproto", "websockets", "websockets-sansio"]
WS_IMPLEMENTATIONS: tuple[WsImplementation, ...] = get_args(WsImplementation)
WS_CHOICES: tuple[str, ...] = ("auto", *WS_IMPLEMENTATIONS)
# Which state of the websocket handshake a signal finds (chaos.scenarios has what each one does).
Scenario = Literal[
    "hold-accept",
    "before-receive",
    "deny-close",
    "deny-stream",
    "accept-send",
    "slow-request",
    "tls-handshake",
    "app",
]
SCENARIOS: tuple[Scenario, ...] = get_args(Scenario)
# The scenario label of a server-side error the log cannot tie to one scenario: the worker it came
# from held handshakes of several when the signal landed (said so, never guessed).
MIXED = "mixed"
# A matrix cell that ran every scenario that applies, mixed (not one of them alone).
MIX = "mix"
# The server under test: gunicorn with uvicorn's worker, uvicorn's own supervisor, gunicorn's own ASGI worker.
ServerFamily = Literal["gunicorn-uvicorn", "uvicorn-workers", "gunicorn-asgi"]

EXIT_KINDS: tuple[ExitKind, ...] = get_args(ExitKind)
MODES: tuple[Mode, ...] = get_args(Mode)
DEFAULT_MODE: Mode = "worker-term"
SERVER_FAMILIES: tuple[ServerFamily, ...] = get_args(ServerFamily)
DEFAULT_SERVER: ServerFamily = "gunicorn-uvicorn"
# A TCP endpoint as (host, port): how a client connection is matched to the worker holding it.
Address = tuple[str, int]


class ExitCode(IntEnum):
    """The product's exit codes (docs/contract.md)."""

    PASS = 0
    FAIL = 1
    USAGE = 2
    INCONCLUSIVE = 3
    NOT_STARTED = 4
    SIGINT = 130
    SIGTERM = 143

    @classmethod
    def of_signal(cls, signum: int) -> int:
        """A run stopped by a signal exits as a shell reports it: 128 + the signal's number."""
        return 128 + signum


VERDICT_EXIT_CODES: dict[Verdict, ExitCode] = {
    "pass": ExitCode.PASS,
    "fail": ExitCode.FAIL,
    "inconclusive": ExitCode.INCONCLUSIVE,
    "error": ExitCode.NOT_STARTED,
    "interrupted": ExitCode.SIGINT,
}

# How a handshake attempt ended. Besides these fixed names: http_NNN (an HTTP answer other
# than 101), closed_NNNN (the server closed an accepted websocket with that code) and
# os_error_NAME (any other socket error).
ACCEPTED = "accepted"
DROPPED = "dropped"  # EOF before a single byte of response
TRUNCATED = "truncated_response"  # EOF in the middle of the response
BAD_RESPONSE = "bad_response"  # bytes that are not an HTTP response
RESET = "reset"
REFUSED = "refused"
TIMEOUT = "timeout"
LOST_AFTER_ACCEPT = "lost_after_accept"  # accepted, then the connection went with no close frame
DENIAL_TRUNCATED = "denial_truncated"  # a denial response's status and headers came, its body was cut
FRAME_TRUNCATED = "frame_truncated"  # accepted, and the app's first frame was cut
TLS_UNTRUSTED = "tls_untrusted"  # wss://: the server's certificate failed verification (see --ca-file)
TLS_FAILED = "tls_failed"  # wss://: the TLS handshake failed otherwise
# Outcomes where the wire carried no valid HTTP answer to the handshake.
NO_RESPONSE_OUTCOMES = frozenset({DROPPED, TRUNCATED, BAD_RESPONSE, RESET, TIMEOUT})
# Shown as zeros before anything happened, so a clean run is not an empty one.
PRECREATED_OUTCOMES = (
    ACCEPTED,
    "http_500",
    "http_503",
    DROPPED,
    TRUNCATED,
    BAD_RESPONSE,
    RESET,
    REFUSED,
    TIMEOUT,
    "closed_1012",
    LOST_AFTER_ACCEPT,
)
_BOUNDED_OUTCOME = re.compile(r"^(http_[1-5]\d\d|closed_1\d\d\d|os_error_[a-z0-9]{1,24}|[a-z_]{1,32})$")


def http_outcome(status: int) -> str:
    return f"http_{status}"


def closed_outcome(code: int | None) -> str:
    return f"closed_{code}" if code is not None else LOST_AFTER_ACCEPT


def os_error_outcome(name: str) -> str:
    return f"os_error_{name.lower()}"


def bounded_scenario(scenario: str) -> str:
    """The scenario as a metric label: one of the fixed set (or "mixed"), whatever a worker reported."""
    return scenario if scenario in SCENARIOS or scenario == MIXED else "other"


def bounded_outcome(outcome: str) -> str:
    """The outcome as a metric label: a bounded set of values, whatever came off the wire."""
    return outcome if _BOUNDED_OUTCOME.match(outcome) else "other"


# -- JSON round-trip and schema, derived from the dataclasses ---------------------------

T = TypeVar("T", bound="JsonRecord")


class JsonRecord:
    """A dataclass that reads and writes itself as plain JSON."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls: type[T], data: dict[str, Any]) -> T:
        return _build(cls, data)  # type: ignore[no-any-return]

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def write(self, path: Path) -> None:
        """Written whole or not at all: a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(self.dumps())
        partial.replace(path)

    @classmethod
    def read(cls: type[T], path: Path) -> T:
        return cls.from_json(json.loads(path.read_text()))


def _optional(hint: Any) -> tuple[bool, Any]:
    if get_origin(hint) in (Union, types.UnionType):
        members = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(members) < len(get_args(hint)):
            return True, members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007
    return False, hint


def _build(hint: Any, value: Any) -> Any:
    optional, hint = _optional(hint)
    if value is None and optional:
        return None
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        hints = get_type_hints(hint)
        known = {f.name for f in dataclasses.fields(hint)}
        return hint(**{name: _build(hints[name], item) for name, item in value.items() if name in known})
    origin = get_origin(hint)
    if origin is list:
        (item_hint,) = get_args(hint)
        return [_build(item_hint, item) for item in value]
    if origin is dict:
        _, value_hint = get_args(hint)
        return {key: _build(value_hint, item) for key, item in value.items()}
    return value


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def json_schema(root: type) -> dict[str, Any]:
    """JSON Schema (2020-12) of a result dataclass: every field required, types as declared."""
    definitions: dict[str, Any] = {}

    def schema(hint: Any) -> dict[str, Any]:
        optional, inner = _optional(hint)
        if optional:
            return {"anyOf": [schema(inner), {"type": "null"}]}
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            if inner.__name__ not in definitions:
                definitions[inner.__name__] = {}  # placeholder against recursion
                hints = get_type_hints(inner)
                definitions[inner.__name__] = {
                    "type": "object",
                    "required": [f.name for f in dataclasses.fields(inner)],
                    "properties": {f.name: schema(hints[f.name]) for f in dataclasses.fields(inner)},
                }
            return {"$ref": f"#/$defs/{inner.__name__}"}
        origin = get_origin(inner)
        if origin is Literal:
            return {"enum": list(get_args(inner))}
        if origin is list:
            return {"type": "array", "items": schema(get_args(inner)[0])}
        if origin is dict:
            value_hint = get_args(inner)[1]
            return {"type": "object", "additionalProperties": {} if value_hint is Any else schema(value_hint)}
        if inner is float:
            return {"type": "number"}
        if inner in _JSON_TYPES:
            return {"type": _JSON_TYPES[inner]}
        return {}

    schema(root)
    body = definitions.pop(root.__name__)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": root.__name__,
        **body,
        "$defs": dict(sorted(definitions.items())),
    }


# -- a run ------------------------------------------------------------------------------


@dataclass
class ErrorRow(JsonRecord):
    """One handshake-time shutdown failure, counted by side and signature."""

    side: Side
    signature: str
    count: int
    example: str
    reference: str | None = None
    # Set when the failure is a catalogued one that this release's version had already fixed for
    # this ws implementation: the release that fixed it (the failure is a regression).
    regression_fixed_in: str | None = None
    # The handshake state it was found in (a scenario), or "mixed" when it cannot be told.
    scenario: str = "hold-accept"

    def regression_line(self) -> str | None:
        """What a maintainer needs to read: "regression of <reference>, fixed in <version>"."""
        if self.regression_fixed_in is None:
            return None
        return f"regression of {self.reference or self.signature}, fixed in {self.regression_fixed_in}"


@dataclass
class Reach(JsonRecord):
    """One worker a signal reached: how many handshakes it held pending then, and how it exited."""

    pid: int
    pending: int | None = None  # None: counted elsewhere (Locust workers answer as a sum)
    exit_kind: ExitKind | None = None
    # What the pending handshakes were doing, by scenario (empty while the answers are elsewhere).
    pending_by_scenario: dict[str, int] = field(default_factory=dict)
    # How many were verifiably in their scenario's state when the signal landed: counted by the
    # probe itself (the states it holds) or by the client (the states it holds), by scenario.
    in_state_by_scenario: dict[str, int] = field(default_factory=dict)


@dataclass(kw_only=True)
class SignalRecord(JsonRecord):
    """One signal the controller sent (or, in dry-run, would have sent); built by keyword only: a
    dozen fields in a row would break silently when one is added."""

    id: int
    time: float
    worker_pid: int
    role: Role
    signal: str
    pending: int
    dry_run: bool
    worker_exit_seconds: float | None = None
    replacement_pid: int | None = None
    replacement_seconds: float | None = None
    exit_kind: ExitKind | None = None
    # The replacement is ready and every exposure answer is in: the record no longer changes
    # in ways the metrics count (pending, landed).
    settled: bool = False
    mode: Mode = "worker-term"
    reach: list[Reach] = field(default_factory=list)  # every worker the signal reached
    master_pid: int | None = None  # the master it went to, or whose worker it was
    # The pending handshakes it caught by scenario (the state each was in): sums to ``pending``.
    pending_by_scenario: dict[str, int] = field(default_factory=dict)
    # Of the workers it reached, the handshakes verifiably in their scenario's state as it landed
    # (the probe's own count for the states it holds, the client's for those it holds).
    in_state_by_scenario: dict[str, int] = field(default_factory=dict)
    # The controller it came from, when the run reads one on another host (``--chaos-controller``).
    controller: str | None = None
    # The probe's own count of the handshakes it held pending on the workers reached (None: no probe said).
    worker_pending: int | None = None
    worker_pending_by_scenario: dict[str, int] = field(default_factory=dict)
    # How ``pending`` was measured: by matching the clients' connections with the worker's sockets, by the
    # worker's own count (where matching found nothing: addresses translated on the way), or both agreeing
    # to be counted (``pending`` is the sockets' count then, ``worker_pending`` the cross-check).
    exposure_measured_by: ExposureSource | None = None


@dataclass
class GateResult(JsonRecord):
    verdict: Verdict
    exit_code: int
    reason: str
    failing: list[str] = field(default_factory=list)


@dataclass
class SignalsSummary(JsonRecord):
    sent: int = 0
    dry_run: int = 0
    landed_with_pending: int = 0
    pending_at_term: list[int] = field(default_factory=list)
    records: list[SignalRecord] = field(default_factory=list)
    # Per scenario: how many signals caught at least one of its handshakes pending.
    landed_by_scenario: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, records: list[SignalRecord]) -> SignalsSummary:
        sent = [record for record in records if not record.dry_run]
        return cls(
            sent=len(sent),
            dry_run=len(records) - len(sent),
            landed_with_pending=sum(1 for record in sent if record.pending > 0),
            pending_at_term=[record.pending for record in records],
            records=list(records),
            landed_by_scenario=landed_by_scenario(sent),
        )


def landed_by_scenario(records: list[SignalRecord]) -> dict[str, int]:
    """Per scenario, the signals that caught at least one of its handshakes pending."""
    landed: dict[str, int] = {}
    for record in records:
        for scenario, pending in record.pending_by_scenario.items():
            if pending > 0:
                landed[scenario] = landed.get(scenario, 0) + 1
    return dict(sorted(landed.items()))


@dataclass
class TargetSummary(JsonRecord):
    url: str | None = None
    embedded: bool = False
    master_pid: int | None = None
    pids: list[int] = field(default_factory=list)
    port: int | None = None
    error_log: str | None = None


@dataclass
class SoakRun(JsonRecord):
    """How the soak command ran the Locust process behind a summary."""

    wall_seconds: float
    locust_exit_code: int | None
    command: list[str]


@dataclass
class TimelinePoint(JsonRecord):
    """The run at one moment: seconds since it started, pending handshakes, attempts and errors so far."""

    t: float
    pending: int
    handshakes: int
    errors: dict[str, int] = field(default_factory=dict)  # side:signature -> count so far


@dataclass
class RunSummary(JsonRecord):
    """``summary.json``: everything a run counted, as CI jobs parse it."""

    release: str
    ws: str
    mode: Mode
    versions: dict[str, Any]
    gate: GateResult
    errors: list[ErrorRow]
    signals: SignalsSummary
    outcomes: dict[str, int]
    worker_exits: dict[str, int] = field(default_factory=dict)
    unattributed_server_errors: int = 0
    # Errors logged without a pid while several workers were shutting down at once: attributed to
    # the latest, which may be wrong (exact while one worker shuts down at a time).
    ambiguous_server_errors: int = 0
    target: TargetSummary = field(default_factory=TargetSummary)
    metrics_url: str | None = None
    metrics_totals: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    duration_seconds: float = 0.0
    started: float = 0.0  # wall-clock time the run started; signal records' times are wall-clock too
    timeline: list[TimelinePoint] = field(default_factory=list)
    server: ServerFamily = DEFAULT_SERVER
    soak: SoakRun | None = None
    stop_reason: str | None = None  # why the run ended when it did (its time, a signal, a settled verdict)
    master_events: dict[str, int] = field(default_factory=dict)  # the masters' own log lines, by event
    noise: dict[str, int] = field(default_factory=dict)  # recognised lines that are not shutdown errors
    # The handshake states exercised (--scenario, or every one that applies), those that could not
    # be (name -> why), and every outcome by scenario (``outcomes`` is their sum).
    scenarios: list[str] = field(default_factory=list)
    skipped_scenarios: dict[str, str] = field(default_factory=dict)
    outcomes_by_scenario: dict[str, dict[str, int]] = field(default_factory=dict)

    def error_counts(self) -> dict[str, int]:
        """``side:signature`` -> count, the key a matrix compares cells by."""
        counts: dict[str, int] = {}
        for row in self.errors:
            key = f"{row.side}:{row.signature}"
            counts[key] = counts.get(key, 0) + row.count
        return counts


# -- the run's events (``--chaos-events``: what a soak reads of its Locust process) --------


class RunEvent(JsonRecord):
    """One line of the events file, ``{"kind": KIND, ...its fields}`` (written and read by ``chaos.report.events``)."""

    KIND: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.KIND, **dataclasses.asdict(self)}


@dataclass
class RunStarted(RunEvent):
    """The deployment is up and the run labelled: what its summary will say it ran."""

    KIND: ClassVar[str] = "started"
    release: str
    ws: str
    mode: Mode
    server: ServerFamily
    metrics_url: str | None
    target_url: str | None
    time: float  # wall clock, as signal records' times
    versions: dict[str, Any] = field(default_factory=dict)


@dataclass
class SignalSent(RunEvent):
    """One signal the controller sent (or, in dry-run, would have sent), with the exposure known then."""

    KIND: ClassVar[str] = "signal"
    id: int
    signal: str  # TERM, INT, HUP, TTOU...
    role: Role
    pending: int
    time: float
    worker_pid: int
    dry_run: bool = False


@dataclass
class FirstSeen(RunEvent):
    """A signature counted for the first time (as ``RunTotals`` first counts it)."""

    KIND: ClassVar[str] = "first_seen"
    side: Side
    signature: str
    count: int  # so far
    example: str
    reference: str | None
    regression: str | None  # ErrorRow.regression_line(): set when a fixed failure is back

    @classmethod
    def of(cls, row: ErrorRow) -> FirstSeen:
        return cls(row.side, row.signature, row.count, row.example, row.reference, row.regression_line())

    def line(self) -> str:
        """The console line: what, how many so far, the example, the reference, the regression."""
        see = f" (see {self.reference})" if self.reference else ""
        regression = f" -- REGRESSION: {self.regression}" if self.regression else ""
        return f"first {self.side}-side {self.signature}, {self.count} so far: {self.example[:200]}{see}{regression}"


@dataclass
class Progress(RunEvent):
    """The run's counts so far, every few seconds while it runs."""

    KIND: ClassVar[str] = "progress"
    time: float
    elapsed: float  # seconds since the run started
    signals: dict[str, int]  # signals sent, by name
    handshakes: int
    errors: int
    signatures: int
    pending: int = 0

    def counts(self) -> str:
        """``signals 12 (TERM 12), handshakes 340, errors 5 (1 signature)``"""
        sent = sum(self.signals.values())
        by_name = ", ".join(f"{name} {count}" for name, count in sorted(self.signals.items()))
        plural = "" if self.signatures == 1 else "s"
        return (
            f"signals {sent}{f' ({by_name})' if by_name else ''}, handshakes {self.handshakes}, "
            f"errors {self.errors} ({self.signatures} signature{plural})"
        )


@dataclass
class VerdictSettled(RunEvent):
    """``--until-verdict``: the verdict can no longer change; the run stops."""

    KIND: ClassVar[str] = "verdict_settled"
    reason: str
    time: float


@dataclass
class RunFinished(RunEvent):
    """The run's summary, the last event of a run that stopped in order."""

    KIND: ClassVar[str] = "summary"
    summary: RunSummary


EVENT_TYPES: dict[str, type[RunEvent]] = {
    cls.KIND: cls for cls in (RunStarted, SignalSent, FirstSeen, Progress, VerdictSettled, RunFinished)
}


def event_from_json(data: dict[str, Any]) -> RunEvent | None:
    """The typed event of one parsed line; None for a kind this version does not know."""
    cls = EVENT_TYPES.get(str(data.get("kind")))
    return cls.from_json(data) if cls is not None else None


# -- a matrix ---------------------------------------------------------------------------


@dataclass
class CellSignals(JsonRecord):
    sent: int = 0
    landed_with_pending: int = 0


@dataclass
class Exposure(JsonRecord):
    mean: float = 0.0
    max: int = 0

    @classmethod
    def of(cls, pending: list[int]) -> Exposure:
        return cls(round(sum(pending) / len(pending), 1), max(pending)) if pending else cls()


@dataclass
class MatrixCell(JsonRecord):
    """One release x ws implementation x chaos mode of a matrix, as it ran (or why it did not)."""

    uvicorn: str
    ws: str
    status: CellStatus
    reason: str
    release: str
    verdict: CellVerdict
    exit_code: int | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    signals: CellSignals = field(default_factory=CellSignals)
    exposure: Exposure = field(default_factory=Exposure)
    outcomes: dict[str, int] = field(default_factory=dict)
    wall_seconds: float | None = None
    report_dir: str | None = None
    expected_fail: bool = False
    new_signatures: list[str] = field(default_factory=list)
    mode: Mode = "worker-term"
    stop_reason: str | None = None
    server: ServerFamily = DEFAULT_SERVER
    # The one scenario the cell ran, or "mix": every scenario that applies, mixed by weight.
    scenario: str = MIX

    @classmethod
    def not_run(
        cls,
        release: str,
        ws: str,
        status: CellStatus,
        reason: str,
        mode: Mode = DEFAULT_MODE,
        server: ServerFamily = DEFAULT_SERVER,
        scenario: str = "mix",
    ) -> MatrixCell:
        verdict: CellVerdict = "skipped" if status == "skipped" else "error"
        return cls(
            uvicorn=release,
            ws=ws,
            status=status,
            reason=reason,
            release=release,
            verdict=verdict,
            mode=mode,
            server=server,
            scenario=scenario,
        )

    @classmethod
    def of(cls, release: str, summary: RunSummary, report_dir: Path, scenario: str = "mix") -> MatrixCell:
        versions = {key: summary.versions.get(key) for key in ("uvicorn", "gunicorn", "websockets", "wsproto")}
        return cls(
            uvicorn=release,
            ws=summary.ws,
            status="ran",
            reason=summary.gate.reason,
            release=summary.release,
            verdict=summary.gate.verdict,
            exit_code=summary.gate.exit_code,
            versions={key: None if value is None else str(value) for key, value in versions.items()},
            errors=summary.error_counts(),
            signals=CellSignals(summary.signals.sent, summary.signals.landed_with_pending),
            exposure=Exposure.of(summary.signals.pending_at_term),
            outcomes=dict(summary.outcomes),
            wall_seconds=summary.soak.wall_seconds if summary.soak else None,
            report_dir=str(report_dir),
            mode=summary.mode,
            stop_reason=summary.stop_reason,
            server=summary.server,
            scenario=scenario,
        )


@dataclass
class MatrixResult(JsonRecord):
    """``matrix.json``."""

    cells: list[MatrixCell]
    wall_seconds: float
    duration_per_cell_seconds: float
    users: int
    baseline_release: str | None
    expect_fail: list[str]
    exit_code: int
