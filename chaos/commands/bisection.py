"""The bisection itself, with no I/O: which candidate to measure next, and what the measurements say.

A *candidate* is a point of history (a release, a commit), oldest first. Measuring one answers
whether the followed signature *appears* there or is *gone* (``Attempt``). The search measures both
ends first, then always the untested candidate nearest the middle of the range where the answer
changes, until that range holds no untested candidate:

- an attempt that comes out inconclusive is repeated, up to ``retries`` more times, before it counts;
  still inconclusive then, the candidate is *skipped*;
- a candidate that cannot be built or booted is skipped at once (as ``git bisect skip`` does), and
  the search goes around it;
- when skipped candidates are all that is left between the last "before" and the first "after",
  the boundary is *ambiguous*: any of them may be the first one, and all are named.

Which end is the failing one does not matter: the ends are measured, and the search follows
whichever way the answer changes (a fix going forward, or a regression).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from packaging.version import Version

from chaos import catalog
from chaos.errors import UsageError
from chaos.results import ExitCode, JsonRecord, RunSummary
from chaos.run.gate import EvidencePolicy

# What one soak of a candidate says of the signature followed.
AttemptOutcome = Literal["appears", "gone", "inconclusive", "error", "interrupted"]
# What a candidate counts as, once its attempts are done.
StepOutcome = Literal["appears", "gone", "skipped", "interrupted"]
Presence = Literal["appears", "gone"]
SearchStatus = Literal["found", "ambiguous", "no_boundary", "unmeasured", "interrupted"]
Stage = Literal["release", "commit"]


@dataclass
class Attempt(JsonRecord):
    """One soak of a candidate: its outcome for the signature, the gate's verdict, and why."""

    outcome: AttemptOutcome
    verdict: str  # the soak's gate verdict (pass, fail, inconclusive, error, interrupted), or "skipped"
    evidence: str  # one line: what was found, and how much the signals caught
    wall_seconds: float = 0.0
    report_dir: str | None = None
    errors: dict[str, int] = field(default_factory=dict)  # side:signature -> count


@dataclass
class StepRecord(JsonRecord):
    """One candidate as the search measured it: every attempt, and what it counted as."""

    index: int  # its position among the stage's candidates, oldest first
    name: str  # the release, or the commit's full hash
    label: str  # what a reader recognises it by (the release; a commit's describe and subject)
    outcome: StepOutcome
    reason: str  # the evidence it counted on, or why it was skipped
    attempts: list[Attempt] = field(default_factory=list)
    skip_kind: Literal["", "error", "inconclusive"] = ""
    wall_seconds: float = 0.0  # every attempt's together


@dataclass
class Search(JsonRecord):
    """A bisection over one stage's candidates (oldest first), and where it ended."""

    stage: Stage
    candidates: list[str]
    labels: list[str]
    status: SearchStatus
    reason: str
    steps: list[StepRecord] = field(default_factory=list)
    # What the oldest and the newest candidate showed (None: not measured).
    old_state: Presence | None = None
    new_state: Presence | None = None
    # found: the newest candidate with the old state, and the oldest with the new one.
    last: str | None = None
    first: str | None = None
    # ambiguous: the candidates that may be the first with the new state (skipped ones, then ``first``).
    maybe_first: list[str] = field(default_factory=list)

    def step(self, name: str) -> StepRecord | None:
        return next((step for step in self.steps if step.name == name), None)

    def exit_code(self) -> int:
        """0 found; 4 an end could not be built or booted; 3 otherwise (no boundary, ambiguous, inconclusive)."""
        if self.status == "found":
            return ExitCode.PASS
        if self.status == "unmeasured" and any(
            step.skip_kind == "error" for step in self.steps if step.index in (0, len(self.candidates) - 1)
        ):
            return ExitCode.NOT_STARTED
        return ExitCode.INCONCLUSIVE


@dataclass
class BisectResult(JsonRecord):
    """``bisect.json``: what was followed, over which history, every step, and the answer."""

    signature: str | None  # None: any handshake-time error (the gate's fail)
    good: str
    bad: str
    ws: str
    mode: str
    server: str
    scenarios: list[str]  # empty: every scenario that applies, mixed
    app: str | None
    retries: int
    releases: Search
    answer: str
    exit_code: int
    wall_seconds: float = 0.0
    commits: Search | None = None
    commit_answer: str | None = None
    repo: str | None = None
    commits_as_of: str | None = None  # the moment every commit's dependencies were resolved at
    notes: list[str] = field(default_factory=list)


Measure = Callable[[int, int], Attempt]  # (candidate index, attempt number from 0) -> the attempt
Announce = Callable[[StepRecord, int], None]  # a step just counted, and how many candidates are left to test


def steps_left(untested: int) -> int:
    """Roughly how many more steps a range of ``untested`` candidates needs (as ``git bisect`` says it)."""
    return math.ceil(math.log2(untested + 1)) if untested > 0 else 0


def measure_step(index: int, name: str, label: str, measure: Measure, retries: int) -> StepRecord:
    """One candidate: measured, and measured again while inconclusive, up to ``retries`` more times."""
    attempts: list[Attempt] = []
    for number in range(retries + 1):
        attempt = measure(index, number)
        attempts.append(attempt)
        if attempt.outcome != "inconclusive":
            break
    last = attempts[-1]
    wall = round(sum(attempt.wall_seconds for attempt in attempts), 1)
    if last.outcome in ("appears", "gone", "interrupted"):
        outcome: StepOutcome = last.outcome
        return StepRecord(index, name, label, outcome, last.evidence, attempts, wall_seconds=wall)
    if last.outcome == "error":
        return StepRecord(index, name, label, "skipped", last.evidence, attempts, "error", wall)
    tries = f"{len(attempts)} tries" if len(attempts) > 1 else "1 try"
    reason = f"inconclusive after {tries}: {last.evidence}"
    return StepRecord(index, name, label, "skipped", reason, attempts, "inconclusive", wall)


def next_candidate(lo: int, hi: int, done: set[int]) -> int | None:
    """The untested candidate strictly between ``lo`` and ``hi`` nearest their middle (the older on a tie)."""
    middle = (lo + hi) / 2
    untested = [index for index in range(lo + 1, hi) if index not in done]
    return min(untested, key=lambda index: (abs(index - middle), index)) if untested else None


def bisect(
    stage: Stage,
    candidates: Sequence[str],
    measure: Measure,
    *,
    retries: int = 2,
    labels: Sequence[str] | None = None,
    announce: Announce | None = None,
) -> Search:
    """Finds where the answer changes between the oldest and the newest of ``candidates``."""
    names = list(candidates)
    shown = list(labels) if labels is not None else list(names)
    search = Search(stage, names, shown, "unmeasured", "")
    if len(names) < 2:
        search.reason = "fewer than two candidates: nothing to bisect"
        return search
    done: set[int] = set()

    def run(index: int) -> StepRecord:
        step = measure_step(index, names[index], shown[index], measure, retries)
        search.steps.append(step)
        done.add(index)
        return step

    def untested_between(lo: int, hi: int) -> int:
        return sum(1 for i in range(lo + 1, hi) if i not in done)

    ends = (0, len(names) - 1)
    for end in ends:
        step = run(end)
        if announce is not None:
            announce(step, len(names) - len(done))
        if step.outcome == "interrupted":
            search.status, search.reason = "interrupted", f"interrupted while measuring {step.label}"
            return search
        if step.outcome == "skipped":
            search.reason = f"{'oldest' if end == 0 else 'newest'} end {step.label} skipped: {step.reason}"
            return search
        if end == 0:
            search.old_state = step.outcome
        else:
            search.new_state = step.outcome
    if search.old_state == search.new_state:
        search.status = "no_boundary"
        search.reason = f"both ends: {search.old_state} ({shown[0]} and {shown[-1]})"
        return search

    lo, hi = ends  # the newest known with the old state, the oldest known with the new one
    skipped: set[int] = set()
    while (index := next_candidate(lo, hi, done)) is not None:
        step = run(index)
        if step.outcome == "skipped":
            skipped.add(index)
        elif step.outcome == search.old_state:
            lo = index
        elif step.outcome == search.new_state:
            hi = index
        if announce is not None:
            announce(step, untested_between(lo, hi))
        if step.outcome == "interrupted":
            search.status, search.reason = "interrupted", f"interrupted while measuring {step.label}"
            return search
    search.last, search.first = names[lo], names[hi]
    left = [index for index in range(lo + 1, hi) if index in skipped]
    if left:
        search.status = "ambiguous"
        search.maybe_first = [names[index] for index in [*left, hi]]
        search.reason = (
            f"only skipped candidates are left between {shown[lo]} and {shown[hi]}: "
            f"the first with the new state is one of {', '.join(shown[i] for i in [*left, hi])}"
        )
    else:
        search.status = "found"
        search.reason = f"the boundary lies between {shown[lo]} and {shown[hi]}"
    return search


def subject(signature: str | None) -> tuple[str, bool]:
    """What the answer speaks of, and whether it is plural."""
    return (signature, False) if signature else ("handshake-time errors", True)


def state_phrase(state: Presence, signature: str | None, pronoun: bool = False) -> str:
    """``uvicorn_596... is gone``, ``it appears``, ``handshake-time errors are gone``, ``they appear``."""
    name, plural = subject(signature)
    who = ("they" if plural else "it") if pronoun else name
    if state == "gone":
        return f"{who} {'are' if plural else 'is'} gone"
    return f"{who} {'appear' if plural else 'appears'}"


def answer(search: Search, signature: str | None, noun: str = "release") -> str:
    """The one line a bisect ends with: "first release where X is gone: B (last where it appears: A)"."""
    label = dict(zip(search.candidates, search.labels, strict=True))
    old, new = search.old_state, search.new_state
    if search.status in ("found", "ambiguous") and old is not None and new is not None:
        last = label[search.last or ""]
        if search.status == "found":
            first = label[search.first or ""]
        else:
            first = "one of " + ", ".join(label[name] for name in search.maybe_first)
        return (
            f"first {noun} where {state_phrase(new, signature)}: {first} "
            f"(last where {state_phrase(old, signature, pronoun=True)}: {last})"
        )
    if search.status == "no_boundary" and old is not None:
        ends = f"{search.labels[0]} and {search.labels[-1]}"
        return f"no boundary: {state_phrase(old, signature)} at both ends ({ends})"
    if search.status == "interrupted":
        return f"interrupted: {search.reason}"
    return f"no answer: {search.reason}"


# -- what is followed ----------------------------------------------------------------------------

# Past any count a run can reach: a signature the bisect does not follow never fails a step's gate.
_TOLERATED = 10**9


def check_signature(signature: str) -> None:
    """A signature the tool can report: a catalogued failure, a generic one, or a generic family's member."""
    entry = catalog.known(signature)
    if entry is not None and entry.noise:
        raise UsageError(f"--signature {signature}: that is noise, never counted as a shutdown error")
    generic = {g.signature for g in catalog.GENERIC_SIGNATURES if g.precreated}
    families = (catalog.EXCEPTION_PREFIX, catalog.CLIENT_PREFIX)
    if entry is None and signature not in generic and not signature.startswith(families):
        names = ", ".join(e.signature for e in catalog.ERROR_ENTRIES)
        raise UsageError(f"--signature: unknown signature {signature!r} (catalogued: {names}; docs/contract.md)")


def followed(signature: str, source_tree: bool) -> frozenset[str]:
    """The names a step's errors may carry for ``signature``. A source tree's version names no path of a
    text several catalogue entries share (only the scenario does): there the group's pathless name counts too."""
    entry = catalog.known(signature)
    if entry is None or not source_tree:
        return frozenset({signature})
    group = [e for e in catalog.ERROR_ENTRIES if e.pattern.pattern == entry.pattern.pattern]
    return frozenset({signature, *(e.signature for e in group if not e.scenarios)})


def tolerated(signature: str) -> list[str]:
    """``--allow`` items for every other signature the tool names up front, so a step runs on past them
    until the followed one shows or the evidence that it is gone is in."""
    group = followed(signature, source_tree=True)
    known = [e.signature for e in catalog.ERROR_ENTRIES]
    known += list(catalog.GENERIC_SERVER_SIGNATURES) + list(catalog.CLIENT_SIGNATURES)
    return [f"{name}={_TOLERATED}" for name in dict.fromkeys(known) if name not in group]


def _signals(summary: RunSummary) -> str:
    signals = summary.signals
    most = max(signals.pending_at_term, default=0)
    return f"{signals.landed_with_pending}/{signals.sent} signals landed with pending handshakes (max {most})"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items(), key=lambda item: -item[1]))


def judge(
    summary: RunSummary, signature: str | None, names: frozenset[str], evidence: EvidencePolicy
) -> tuple[AttemptOutcome, str]:
    """What one soak says of the followed signature (None: any handshake-time error), and its evidence."""
    gate = summary.gate
    if gate.verdict == "interrupted":
        return "interrupted", gate.reason
    if gate.verdict == "error":
        return "error", f"could not start: {gate.reason}"
    per_signature: dict[str, int] = {}
    for row in summary.errors:
        per_signature[row.signature] = per_signature.get(row.signature, 0) + row.count
    per_signature = {name: count for name, count in per_signature.items() if count > 0}
    if signature is None:
        if gate.verdict == "fail":
            return "appears", f"fail: {_counts({n: per_signature[n] for n in gate.failing})}; {_signals(summary)}"
        if gate.verdict == "pass":
            return "gone", f"pass: {_signals(summary)}, no error"
        return "inconclusive", gate.reason
    found = {name: count for name, count in per_signature.items() if name in names}
    others = {name: count for name, count in per_signature.items() if name not in names}
    also = f"; other errors: {_counts(others)}" if others else ""
    if found:
        return "appears", f"{_counts(found)}; {_signals(summary)}{also}"
    if gate.verdict == "pass":
        return "gone", f"no {signature}: {_signals(summary)}{also}"
    if gate.verdict == "fail":
        # Another signature failed the gate (one no allowance could name up front): gone only if the
        # signals caught as much as a settled pass needs.
        strong = [r for r in summary.signals.records if r.settled and r.pending >= evidence.pending]
        if len(strong) >= evidence.signals:
            return "gone", f"no {signature} in {len(strong)} signals that caught {evidence.pending}+ pending{also}"
        return "inconclusive", f"no {signature}, but the run stopped on other errors first{also}"
    return "inconclusive", gate.reason


# -- which releases --------------------------------------------------------------------------------


def release_candidates(published: Iterable[str], ends: tuple[str, str], include_prereleases: bool) -> list[str]:
    """The released versions from the older end to the newer one, oldest first. Pre-releases only when
    asked (an end that is one is always kept); each version once, as the index spells it."""
    low, high = sorted(Version(end) for end in ends)
    chosen: dict[Version, str] = {}
    for text in published:
        version = Version(text)
        if not low <= version <= high or version in chosen:
            continue
        if version.is_prerelease and not include_prereleases and version not in (low, high):
            continue
        chosen[version] = text
    return [chosen[version] for version in sorted(chosen)]
