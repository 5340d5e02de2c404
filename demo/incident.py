"""A bad release and its fix, as an on-call would live it.

1. **bad release**: a copy of the champion whose graph fails at run time (it passes every digest
   check: ``trainer.tiny.failing_copy``) goes out as a 20% canary on ``team``. Its complaints go to
   the DLQ with reason ``model_failure``; the circuit breaker stays closed, since the model fails on
   a fifth of the records, below its 50% threshold. A broken producer also sends two records that
   are not JSON.
2. **fix and redrive**: list the dead letters, end the canary, wait until every consumer serves the
   new strategy, redrive the ``model_failure`` ones (a dry run first), wait until each of them is
   allocated. The two records that are not JSON stay in the DLQ for a person: no model fixes them.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from demo.flow import Demo
from demo.phases import Phases
from demo.screen import Screen

# what a broken producer sends: plain text, and JSON cut off mid-document
POISON = (
    ("demo-poison-1", b"complaint: my card was charged twice for one purchase"),
    ("demo-poison-2", b'{"schema": "complaint/v1", "complaint_id": "demo-poison-2", "te'),
)


@dataclass
class Incident:
    """What the report says about the incident."""

    broken: str = ""
    failed: list[str] = field(default_factory=list)  # complaints dead-lettered by the model
    before: Counter[str] = field(default_factory=Counter)  # DLQ records by reason, before
    after: Counter[str] = field(default_factory=Counter)  # ... and after the redrive
    failed_again: int = 0  # records in the DLQ a second time (dlq.attempt 2 or more)
    redriven: int | None = None  # what the redrive reported it sent
    rerun: int | None = None  # what the same redrive, run again, would send
    unallocated: int = 0  # redriven complaints still without an allocation at the end
    switch_seconds: float | None = None  # from `strategy end` to every consumer serving it

    def lines(self) -> list[str]:
        """The report's paragraph."""
        n = len(self.failed)
        switched = (
            "not confirmed within 20 s"
            if self.switch_seconds is None
            else f"every consumer served the new strategy {self.switch_seconds:.1f} s after the "
            "command returned, before the redrive"
        )
        return [
            f"Bad release and redrive ({self.broken}: a 20% canary on team whose graph fails):",
            f"  DLQ before the redrive: {counts(self.before)}",
            f"  fix: `allocator strategy end --task team` ({switched})",
            f"  redrive --code model_failure: sent {_or_unknown(self.redriven)}; redriven "
            f"complaints allocated: {n - self.unallocated} of {n}"
            + (f" ({self.unallocated} STILL MISSING)" if self.unallocated else ""),
            f"  DLQ after: {counts(self.after)} records in the topic (a redrive moves its cursor, "
            f"it deletes nothing); failed again: {self.failed_again}; the same redrive again "
            f"would send {_or_unknown(self.rerun)}",
            f"  left for a person: not_json {self.after.get('not_json', 0)} "
            "(`allocator dlq list --code not_json --show-text` shows them)",
        ]


def counts(c: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


def _or_unknown(n: int | None) -> str:
    return "?" if n is None else str(n)


def bad_release(demo: Demo, phases: Phases, screen: Screen, champion: Path, n: int) -> Incident:
    from trainer.tiny import failing_copy

    incident = Incident()
    with phases.run("bad release") as phase:
        broken = failing_copy(champion, Path(".stack") / "demo-broken")
        print(f"demo: a bad release: {broken}, the champion with a graph that fails at run time")
        incident.broken = demo.cli("models", "register", str(broken)).split()[0]
        demo.cli(
            "strategy",
            "canary",
            incident.broken,
            "--weight",
            "0.2",
            "--task",
            "team",
            "--reason",
            "demo: release the re-exported champion to 20% of team",
        )
        docs = demo.take(n)
        demo.traffic.stream(docs[: n // 2], screen.show, dead_ok=True, timeout=60)
        for key, value in POISON:
            demo.traffic.send_raw(key, value)
        demo.traffic.stream(docs[n // 2 :], screen.show, dead_ok=True, timeout=60)
        demo.traffic.wait([k for k, _ in POISON], screen.show, dead_ok=True, timeout=60)
        screen.show("bad release: dead letters in")
        incident.failed = sorted(k for k, r in demo.traffic.dead.items() if r == "model_failure")
        phase.notes.append(
            f"{incident.broken} on a 20% team canary: {len(incident.failed)} of {len(docs)} "
            f"complaints dead-lettered (model_failure), {len(POISON)} records that are not JSON"
        )
    return incident


def fix_and_redrive(demo: Demo, phases: Phases, screen: Screen, incident: Incident) -> None:
    with phases.run("fix and redrive") as phase:
        demo.cli("dlq", "list", "--code", "model_failure", "--limit", "3")
        incident.before, _ = _dlq_counts(demo)
        out = demo.cli(
            "strategy",
            "end",
            "--task",
            "team",
            "--reason",
            f"demo: {incident.broken} fails at inference (model_failure in the DLQ)",
        )
        incident.switch_seconds = _wait_for_plan(screen, _version(out))
        demo.cli("dlq", "redrive", "--code", "model_failure", "--dry-run")
        demo.traffic.forget(incident.failed)  # their latency would include the fix
        incident.redriven = _count(
            r"^sent (\d+) of", demo.cli("dlq", "redrive", "--code", "model_failure")
        )
        incident.unallocated = demo.traffic.wait(incident.failed, screen.show, timeout=120)
        demo.cli("dlq", "list", "--code", "not_json")
        incident.rerun = _count(
            r"^would send (\d+) of",
            demo.cli("dlq", "redrive", "--code", "model_failure", "--dry-run"),
        )
        incident.after, incident.failed_again = _dlq_counts(demo)
        phase.notes.append(
            f"redrive sent {incident.redriven}; "
            f"{len(incident.failed) - incident.unallocated} of {len(incident.failed)} redriven "
            f"complaints allocated; the same redrive again would send {incident.rerun}"
        )


def _dlq_counts(demo: Demo) -> tuple[Counter[str], int]:
    """(DLQ records by reason, how many failed more than once), as ``dlq list --json`` reads the
    topic."""
    rows = [
        json.loads(line)
        for line in demo.cli("dlq", "list", "--json", "--limit", "100000", quiet=True).splitlines()
        if line.startswith("{")
    ]
    return Counter(r["code"] or "unknown" for r in rows), sum(r["attempt"] > 1 for r in rows)


def _wait_for_plan(screen: Screen, version: int | None, timeout: float = 20) -> float | None:
    """Seconds until every consumer serves strategy ``version`` (None: not within ``timeout``)."""
    started = time.monotonic()
    while version is not None and time.monotonic() - started < timeout:
        if min(screen.strategy_versions()) >= version:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def _version(out: str) -> int | None:
    return _count(r"^strategy version (\d+)", out)


def _count(pattern: str, out: str) -> int | None:
    found = re.search(pattern, out, re.MULTILINE)
    return int(found.group(1)) if found else None
