"""Score a micro-batch under a plan and build its allocations and shadow records. No I/O here.

Rules (DESIGN sections 2 and 4):
1. Per task the strategy names the published arm (champion, or canary by sticky hash) and any
   shadow.
2. Each model runs at most once per message, whatever the number of tasks that need it; models that
   share a tokenizer share one tokenisation.
3. ``vulnerable`` is true when any signal says so: the customer record (``complaint.customer``),
   the keyword rule (both in ``consumer.vulnerability``) or the model's head at its calibrated
   threshold. ``journey`` is ``vulnerable`` then, and during any experiment also when the champion
   of ``vulnerable`` flags it (the guardrail). ``vulnerable_signals`` names what decided.
4. Each multiclass head is ``auto`` when its top score reaches the head's threshold and its
   manifest's guarantee is met, else ``review`` (``routing`` says which and why);
   ``needs_review`` when any head is left to review, with ``<task>_low_confidence`` or
   ``<task>_no_guarantee`` in ``review_reasons``.
5. A model failure is isolated to the messages that cause it: they come back as failures, the rest
   go on.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from consumer import __version__
from consumer.contracts.messages import (
    Allocation,
    Arm,
    Complaint,
    ModelRef,
    Prediction,
    Route,
    Scored,
    ShadowResult,
    Source,
    StrategyRef,
    VulnerableSignal,
)
from consumer.errors import InferenceError
from consumer.inference import Encoded, OnnxModel
from consumer.package import TaskHead
from consumer.plan import Plan
from consumer.vulnerability import customer_signals, keyword_signals

Want = tuple[Arm, str, str | None]  # per task: published arm, published model ref, shadow model ref
# per model ref, per batch row: the heads' probabilities and whether the text was truncated
Outputs = dict[str, dict[int, tuple[dict[str, np.ndarray], bool]]]


@dataclass(frozen=True)
class Item:
    """A decoded complaint in flight with its source coordinates."""

    complaint: Complaint
    source: Source
    started: float  # time.monotonic() when polled


@dataclass(frozen=True)
class Routed:
    allocations: list[tuple[Item, Allocation]]
    shadows: list[ShadowResult]
    failures: list[tuple[Item, InferenceError]]
    inference_seconds: dict[str, float]  # per model version, summed over the batch


def decision_id(source: Source) -> str:
    """Deterministic from the input coordinates, so a re-processed record is recognisable
    downstream."""
    return hashlib.sha256(
        f"{source.topic}/{source.partition}/{source.offset}".encode()
    ).hexdigest()[:32]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def route(head: TaskHead, prediction: Prediction) -> Route:
    """Whether a multiclass head's prediction is automated (see rule 4 of the module doc)."""
    threshold = min(max(head.review_threshold, 0.0), 1.0)
    if head.guarantee_met is False:
        return Route(decision="review", reason="no_guarantee", threshold=threshold)
    if head.automates(prediction.score):
        return Route(decision="auto", reason="confident", threshold=threshold)
    return Route(decision="review", reason="low_confidence", threshold=threshold)


def predict(
    head: TaskHead, probs: np.ndarray, model: ModelRef, arm: Arm, truncated: bool
) -> Prediction:
    order = np.argsort(-probs)
    if head.kind == "binary":
        assert head.positive_label is not None
        pos = head.labels.index(head.positive_label)
        flagged = bool(probs[pos] >= head.threshold)
        idx = pos if flagged else int(next(i for i in order if i != pos))
    else:
        idx = int(order[0])
    top = tuple(
        Scored(label=head.labels[i], score=round(float(probs[i]), 6)) for i in order[: head.top_k]
    )
    return Prediction(
        label=head.labels[idx],
        score=round(float(probs[idx]), 6),
        top_k=top,
        model=model,
        arm=arm,
        truncated=truncated,
    )


class Router:
    """Routes one micro-batch under one plan."""

    def __init__(self, plan: Plan, topic_version: str = __version__) -> None:
        self.plan = plan
        self.version = topic_version
        self.refs = {
            ref: ModelRef(name=m.package.name, version=m.package.version, sha256=m.package.digest)
            for ref, m in plan.models.items()
        }

    def route(self, items: Sequence[Item]) -> Routed:
        wants = [self._wants(it.complaint.complaint_id) for it in items]
        outputs, failed, seconds = self._score(items, wants)
        allocations, shadows, failures = [], [], []
        stamp, now = datetime.now(UTC), time.monotonic()
        for i, item in enumerate(items):
            if i in failed:
                failures.append((item, failed[i]))
                continue
            alloc, shadow = self._build(item, wants[i], outputs, i, stamp, now)
            allocations.append((item, alloc))
            if shadow is not None:
                shadows.append(shadow)
        return Routed(allocations, shadows, failures, seconds)

    def _wants(self, complaint_id: str) -> dict[str, Want]:
        """Per task: (arm, published model, shadow model or None)."""
        out: dict[str, Want] = {}
        for task, tp in self.plan.strategy.tasks.items():
            arm = tp.arm(complaint_id)
            published = tp.challenger if arm == "canary" and tp.challenger else tp.champion
            out[task] = (arm, published, tp.challenger if tp.shadowed(complaint_id) else None)
        return out

    def _score(
        self, items: Sequence[Item], wants: list[dict[str, Want]]
    ) -> tuple[
        dict[str, dict[int, tuple[dict[str, np.ndarray], bool]]],
        dict[int, InferenceError],
        dict[str, float],
    ]:
        plan = self.plan
        needed: dict[str, set[int]] = defaultdict(set)
        guard = plan.strategy.tasks.get("vulnerable")
        for i, want in enumerate(wants):
            for _arm, published, shadow in want.values():
                needed[published].add(i)
                if shadow:
                    needed[shadow].add(i)
            if guard is not None and guard.mode != "champion":
                needed[guard.champion].add(i)
        encoded: dict[tuple[str, int, str], dict[int, Encoded]] = {}
        for ref, idx in needed.items():
            enc = plan.encoder(ref)
            cache = encoded.setdefault(enc.key, {})
            todo = sorted(i for i in idx if i not in cache)
            if todo:
                cache.update(
                    zip(todo, enc.encode([items[i].complaint.text for i in todo]), strict=True)
                )
        outputs: Outputs = {}
        failed: dict[int, InferenceError] = {}
        seconds: dict[str, float] = {}
        for ref, idx in sorted(needed.items()):
            model, cache = plan.models[ref], encoded[plan.encoder(ref).key]
            rows = sorted(idx - failed.keys())
            outputs[ref] = {}
            started = time.perf_counter()
            for chunk in self._run(model, [cache[i] for i in rows], rows, failed):
                for i, probs in chunk:
                    outputs[ref][i] = (probs, cache[i].truncated)
            seconds[model.package.version] = (
                seconds.get(model.package.version, 0.0) + time.perf_counter() - started
            )
        return outputs, failed, seconds

    @staticmethod
    def _run(
        model: OnnxModel, encs: list[Encoded], rows: list[int], failed: dict[int, InferenceError]
    ) -> Iterator[list[tuple[int, dict[str, np.ndarray]]]]:
        """Run the rows together; on failure, alone, so that one bad message does not sink the
        batch."""
        try:
            probs = model.run(encs)
            yield [(i, {t: p[k] for t, p in probs.items()}) for k, i in enumerate(rows)]
            return
        except InferenceError:
            pass
        for enc, i in zip(encs, rows, strict=True):
            try:
                probs = model.run([enc])
                yield [(i, {t: p[0] for t, p in probs.items()})]
            except InferenceError as exc:
                failed[i] = exc

    def _predictions(
        self, want: dict[str, Want], outputs: Outputs, i: int
    ) -> tuple[dict[str, Prediction], dict[str, Prediction]]:
        """Row ``i``'s published and shadow predictions, per task."""
        preds, shadow_preds = {}, {}
        for task, (arm, published, shadow) in want.items():
            probs, trunc = outputs[published][i]
            head = self.plan.models[published].heads[task]
            preds[task] = predict(head, probs[task], self.refs[published], arm, trunc)
            if shadow:
                sprobs, strunc = outputs[shadow][i]
                shead = self.plan.models[shadow].heads[task]
                shadow_preds[task] = predict(
                    shead, sprobs[task], self.refs[shadow], "shadow", strunc
                )
        return preds, shadow_preds

    def _routing(
        self, want: dict[str, Want], preds: dict[str, Prediction], side: int
    ) -> dict[str, Route]:
        """Each multiclass head's route by the thresholds of the model that made its prediction:
        ``side`` 1 for the published models, 2 for the shadows."""
        out = {}
        for task, p in preds.items():
            ref = want[task][side]
            head = self.plan.models[ref].heads[task] if ref else None
            if head is not None and head.kind == "multiclass":
                out[task] = route(head, p)
        return out

    def _champion_flags_vulnerable(self, outputs: Outputs, i: int) -> bool:
        """The guardrail during an experiment on ``vulnerable``: the champion's flag still sends
        the complaint to the vulnerable journey, whatever the published arm says."""
        guard = self.plan.strategy.tasks["vulnerable"]
        if guard.mode == "champion":
            return False
        cprobs, _ = outputs[guard.champion][i]
        chead = self.plan.models[guard.champion].heads["vulnerable"]
        positive = chead.labels.index(chead.positive_label or "yes")
        return bool(cprobs["vulnerable"][positive] >= chead.threshold)

    def _build(
        self,
        item: Item,
        want: dict[str, Want],
        outputs: Outputs,
        i: int,
        stamp: datetime,
        now: float,
    ) -> tuple[Allocation, ShadowResult | None]:
        plan = self.plan
        complaint = item.complaint
        preds, shadow_preds = self._predictions(want, outputs, i)
        routing = self._routing(want, preds, 1)
        reasons = [f"{t}_{r.reason}" for t, r in routing.items() if r.decision == "review"]
        signals: list[VulnerableSignal] = [
            *customer_signals(complaint.customer, complaint.received_at),
            *keyword_signals(complaint.text),
        ]
        if "vulnerable" in preds and preds["vulnerable"].label == _positive(
            plan, want["vulnerable"][1]
        ):
            signals.append("model")
        vulnerable = bool(signals)
        if not vulnerable and "vulnerable" in want and self._champion_flags_vulnerable(outputs, i):
            signals.append("champion_guardrail")
            reasons.append("vulnerable_guardrail")
        source = item.source
        did = decision_id(source)
        alloc = Allocation(
            decision_id=did,
            complaint_id=complaint.complaint_id,
            allocated_at=stamp,
            team=preds["team"].label,
            issue=preds["issue"].label,
            vulnerable=vulnerable,
            journey="vulnerable" if signals else "standard",
            needs_review=bool(reasons),
            review_reasons=tuple(reasons),
            predictions=preds,
            routing=routing,
            vulnerable_signals=tuple(signals),
            strategy=StrategyRef(version=plan.strategy.version),
            source=source,
            input_sha256=text_sha256(complaint.text),
            latency_ms=round((now - item.started) * 1000, 3),
            consumer_version=self.version,
            metadata=complaint.metadata,
        )
        shadow_rec = None
        if shadow_preds:
            shadow_rec = ShadowResult(
                decision_id=did,
                complaint_id=complaint.complaint_id,
                allocated_at=stamp,
                predictions=shadow_preds,
                published={t: preds[t] for t in shadow_preds},
                agreement={t: p.label == preds[t].label for t, p in shadow_preds.items()},
                routing=self._routing(want, shadow_preds, 2),
                strategy=StrategyRef(version=plan.strategy.version),
                source=source,
            )
        return alloc, shadow_rec


def _positive(plan: Plan, ref: str) -> str:
    return plan.models[ref].heads["vulnerable"].positive_label or "yes"
