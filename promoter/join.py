"""The join of feedback with its allocation and shadow result, as pure functions over one
complaint's state.

A complaint's state (a Redis hash, see ``state``) holds at most one allocation, shadow result and
feedback, and two markers: ``j`` (the feedback was joined, with its outcome) and ``sj`` (the shadow
was joined). The markers live in the same hash and are written in the same transaction as every
counter they cause, so a record applied twice counts once. Records may arrive in any order:

1. An allocation is stored; a later one for the same complaint with the same ``decision_id`` is a
   duplicate, with another id it replaces the first (a re-allocation) until feedback has joined.
2. Feedback is stored; a second feedback for a complaint is a duplicate (the first decision counts).
   Without its allocation (or with a ``decision_id`` naming another one) it is *parked*: it joins
   when the allocation arrives, or becomes *unknown* when ``join_ttl_s`` passes
   (``state.JoinStore.sweep``).
3. Joining counts the feedback once, as ``joined``, or as ``late`` when it was decided more than
   ``join_ttl_s`` after the allocation, or when the allocation served experiment arms that have all
   ended since. Live outcomes (per task, model, arm) count in both cases; each task's running
   experiment counts the label unless it is too old.
4. A shadow result joins (both arms of its shadow experiment) once its allocation and feedback are
   joined.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from promoter.experiments import Experiment, canary_increments, shadow_increments
from promoter.records import AllocRec, Decoded, FeedbackRec, Pred, ShadowRec, model_flag


@dataclass
class ComplaintState:
    alloc: AllocRec | None = None
    shadow: ShadowRec | None = None
    fb: FeedbackRec | None = None
    joined: str = ""  # "", "joined" or "late"
    shadow_joined: bool = False
    exists: bool = False  # the hash was in Redis before this batch (else it needs its TTL)
    changed: dict[str, str] = field(default_factory=dict)  # hash fields to write

    @classmethod
    def of(cls, fields: Mapping[bytes, bytes]) -> ComplaintState:
        f = {k.decode(): v for k, v in fields.items()}
        return cls(
            alloc=AllocRec.from_json(f["a"]) if "a" in f else None,
            shadow=ShadowRec.from_json(f["s"]) if "s" in f else None,
            fb=FeedbackRec.from_json(f["f"]) if "f" in f else None,
            joined=f.get("j", b"").decode(),
            shadow_joined="sj" in f,
            exists=bool(f),
        )

    def set(self, name: str, value: str) -> None:
        self.changed[name] = value


@dataclass
class Delta:
    """Everything one batch changes, written in one transaction, then reported to metrics."""

    summary: Counter[str] = field(
        default_factory=Counter
    )  # "<kind>.<outcome>" -> count, kept in Redis
    live: Counter[str] = field(default_factory=Counter)  # live-accuracy hash field -> increment
    experiments: dict[str, Counter[str]] = field(
        default_factory=dict
    )  # summed increments per experiment
    labels: dict[str, list[Mapping[str, int]]] = field(
        default_factory=dict
    )  # the same, label by label
    touched: dict[str, Experiment] = field(default_factory=dict)
    decisions: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # decided by a label of this batch
    parked: dict[str, float] = field(default_factory=dict)  # complaint id -> when parked
    unparked: set[str] = field(default_factory=set)
    joined: dict[str, float] = field(
        default_factory=dict
    )  # complaint id -> when joined (export index)
    delays: list[float] = field(default_factory=list)  # label delays, seconds
    outcomes: Counter[tuple[str, str, str, str]] = field(
        default_factory=Counter
    )  # task, version, arm, correct
    malformed: list[dict[str, Any]] = field(default_factory=list)

    def count(self, kind: str, outcome: str) -> None:
        self.summary[f"{kind}.{outcome}"] += 1

    def add(self, exp: Experiment, increments: Mapping[str, int]) -> None:
        self.experiments.setdefault(exp.id, Counter()).update(increments)
        self.labels.setdefault(exp.id, []).append(increments)
        self.touched[exp.id] = exp


def live_field(*parts: str) -> str:
    """A field of the live hash: ``acc <task> <model> <arm> n|correct``, ``rec <model> <arm>
    positives|flagged``, or for the heads with a routing decision ``sel <task> <model> <arm>
    routed|auto|correct`` (of the labelled predictions: all, the automated, the automated right)."""
    return "\t".join(parts)


def live_table(counters: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Live accuracy per (task, model, arm) and vulnerable recall per (model, arm), from the live
    counters."""
    acc, rec = [], []
    for name, n in sorted(counters.items()):
        parts = name.split("\t")
        if parts[0] == "acc" and parts[-1] == "n":
            correct = counters.get("\t".join([*parts[:-1], "correct"]), 0)
            task, model, arm = parts[1:4]
            acc.append(
                {
                    "task": task,
                    "model": model,
                    "arm": arm,
                    "n": n,
                    "correct": correct,
                    "accuracy": correct / n,
                }
            )
        elif parts[0] == "rec" and parts[-1] == "positives":
            flagged = counters.get("\t".join([*parts[:-1], "flagged"]), 0)
            model, arm = parts[1:3]
            rec.append(
                {
                    "model": model,
                    "arm": arm,
                    "positives": n,
                    "flagged": flagged,
                    "recall": flagged / n,
                }
            )
    return {"accuracy": acc, "vulnerable_recall": rec, "automated": _selective(counters)}


def _selective(counters: dict[str, int]) -> list[dict[str, Any]]:
    """Coverage and accuracy on the automated share per (task, model, arm): what the manifest's
    guarantee promises, measured on the complaints people decided later."""
    rows = []
    for name, routed in sorted(counters.items()):
        parts = name.split("\t")
        if parts[0] != "sel" or parts[-1] != "routed" or not routed:
            continue
        task, model, arm = parts[1:4]
        auto, correct = (
            counters.get(live_field("sel", task, model, arm, k), 0) for k in ("auto", "correct")
        )
        rows.append(
            {
                "task": task,
                "model": model,
                "arm": arm,
                "routed": routed,
                "automated": auto,
                "coverage": auto / routed,
                "correct": correct,
                "accuracy": correct / auto if auto else None,
            }
        )
    return rows


class Joiner:
    """Applies records to complaint states under the experiments running now."""

    def __init__(self, experiments: Mapping[str, Experiment], ttl_s: float, now: float) -> None:
        self.experiments = experiments
        self.ttl_s = ttl_s
        self.now = now

    def apply(self, state: ComplaintState, rec: Decoded, delta: Delta) -> None:
        body = rec.body
        if isinstance(body, AllocRec):
            self._allocation(state, body, rec.complaint_id, delta)
        elif isinstance(body, ShadowRec):
            self._shadow(state, body, delta)
        elif isinstance(body, FeedbackRec):
            self._feedback(state, body, rec.complaint_id, delta)

    def _allocation(self, state: ComplaintState, alloc: AllocRec, cid: str, delta: Delta) -> None:
        if state.alloc is not None and (
            state.alloc.decision_id == alloc.decision_id or state.joined
        ):
            delta.count("allocation", "duplicate")
            return
        delta.count("allocation", "replaced" if state.alloc is not None else "stored")
        state.alloc = alloc
        state.set("a", alloc.to_json())
        self._join(state, cid, delta)

    def _shadow(self, state: ComplaintState, shadow: ShadowRec, delta: Delta) -> None:
        if state.shadow is not None and (
            state.shadow.decision_id == shadow.decision_id or state.shadow_joined
        ):
            delta.count("shadow", "duplicate")
            return
        delta.count("shadow", "stored")
        state.shadow = shadow
        state.set("s", shadow.to_json())
        self._join_shadow(state, delta)

    def _feedback(self, state: ComplaintState, fb: FeedbackRec, cid: str, delta: Delta) -> None:
        if state.fb is not None:
            delta.count("feedback", "duplicate")
            return
        state.fb = fb
        state.set("f", fb.to_json())
        if not self._join(state, cid, delta):
            delta.count("feedback", "parked")
            delta.parked[cid] = self.now

    def _join(self, state: ComplaintState, cid: str, delta: Delta) -> bool:
        a, f = state.alloc, state.fb
        if a is None or f is None or state.joined:
            return bool(state.joined)
        if f.decision_id is not None and f.decision_id != a.decision_id:
            return False  # feedback on another allocation of this complaint: wait for it
        delay = (f.decided_at - a.allocated_at).total_seconds()
        counted = []
        stray = False  # served an experiment arm that no longer runs
        for task, p in a.predictions.items():
            exp = self.experiments.get(task)
            inc = canary_increments(exp, a, f) if exp is not None else None
            if inc is not None and exp is not None:
                counted.append((exp, inc))
            elif p.arm == "canary":
                stray = True
        if state.shadow is not None and state.shadow.decision_id == a.decision_id:
            stray |= not any(e.takes_shadow(a, state.shadow) for e in self.experiments.values())
        timely = delay <= self.ttl_s
        # late: too long after the allocation, or it served only experiments that have ended since
        outcome = "joined" if timely and (counted or not stray) else "late"
        self._live(a.predictions, f, model_flag(a.predictions), delta)
        if timely:  # each task's experiment counts on its own, whatever became of the others
            for exp, inc in counted:
                delta.add(exp, inc)
        state.joined = outcome
        state.set("j", outcome)
        delta.count("feedback", outcome)
        delta.delays.append(max(0.0, delay))
        delta.unparked.add(cid)
        delta.parked.pop(cid, None)
        delta.joined[cid] = self.now
        self._join_shadow(state, delta)
        return True

    def _join_shadow(self, state: ComplaintState, delta: Delta) -> None:
        a, s, f = state.alloc, state.shadow, state.fb
        if a is None or s is None or f is None or not state.joined or state.shadow_joined:
            return
        if s.decision_id != a.decision_id:
            return
        state.shadow_joined = True
        state.set("sj", "1")
        delta.count("shadow", "joined")
        self._live(s.predictions, f, model_flag(s.predictions), delta)
        if (f.decided_at - a.allocated_at).total_seconds() > self.ttl_s:
            return
        for exp in self.experiments.values():
            inc = shadow_increments(exp, a, s, f)
            if inc is not None:
                delta.add(exp, inc)

    @staticmethod
    def _live(
        preds: Mapping[str, Pred], fb: FeedbackRec, flagged: bool | None, delta: Delta
    ) -> None:
        """Live outcomes per (task, model, arm); vulnerable recall of the model that made the
        flag."""
        for task, p in preds.items():
            truth = fb.labels.get(task)
            if truth is None:  # feedback without this task's label: nothing to score
                continue
            correct = p.label == truth
            delta.live[live_field("acc", task, p.model, p.arm, "n")] += 1
            delta.live[live_field("acc", task, p.model, p.arm, "correct")] += correct
            delta.outcomes[(task, p.version, p.arm, str(correct).lower())] += 1
            if p.auto is not None:
                sel = ("sel", task, p.model, p.arm)
                delta.live[live_field(*sel, "routed")] += 1
                delta.live[live_field(*sel, "auto")] += p.auto
                delta.live[live_field(*sel, "correct")] += p.auto and correct
        vp = preds.get("vulnerable")
        if fb.vulnerable and vp is not None and flagged is not None:
            delta.live[live_field("rec", vp.model, vp.arm, "positives")] += 1
            delta.live[live_field("rec", vp.model, vp.arm, "flagged")] += flagged
