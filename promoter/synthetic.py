"""Synthetic allocation, shadow and feedback records with chosen model skill: the promoter's test
double.

A simulation needs models of known quality without training any. ``Simulator`` plays the consumer:
for each complaint with known true labels it routes every task as the strategy would (sticky canary
arm, shadow sample), and lets each model's prediction be right with that model's ``Skill``;
``feedback`` plays the people who decide. The records are real ``allocation/v1``, ``shadow/v1`` and
``feedback/v1`` messages, so the promoter under test reads them from real topics exactly as it would
read the consumer's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from pydantic import BaseModel

from consumer.contracts.messages import (
    Allocation,
    Feedback,
    ModelRef,
    Prediction,
    Route,
    Scored,
    ShadowResult,
    Source,
    StrategyRef,
)
from consumer.strategy import Strategy

Labels = Mapping[str, str]  # task -> label; "vulnerable" is "yes" / "no"


@dataclass(frozen=True)
class Skill:
    """How good a model is: accuracy on every multi-class task, recall and false-alarm rate on
    vulnerable."""

    accuracy: float
    recall: float = 0.9
    false_alarm: float = 0.05
    # share of multi-class decisions the model takes alone (routing auto); drawn from a hash of
    # (complaint, task, model), not the seeded generator, so adding it moved no other draw
    coverage: float = 1.0


@dataclass(frozen=True)
class Truth:
    complaint_id: str
    labels: Labels
    source: tuple[str, int, int] = ("complaints", 0, 0)
    text_sha256: str = "0" * 64


def ref(model: str, digest: str = "") -> ModelRef:
    name, _, version = model.partition("@")
    return ModelRef(
        name=name, version=version, sha256=digest or hashlib.sha256(model.encode()).hexdigest()
    )


class Simulator:
    """Draws predictions right with each model's skill (seeded: the same inputs give the same
    records)."""

    def __init__(
        self,
        strategy: Strategy,
        skills: Mapping[str, Skill],
        label_sets: Mapping[str, Sequence[str]],
        digests: Mapping[str, str] | None = None,
        seed: int = 0,
    ) -> None:
        self.strategy = strategy
        self.skills = skills
        self.label_sets = label_sets
        self.digests = dict(digests or {})
        self.rng = np.random.default_rng(seed)

    def _label(self, task: str, truth: str, model: str) -> str:
        skill = self.skills[model]
        if task == "vulnerable":
            p_yes = skill.recall if truth == "yes" else skill.false_alarm
            return "yes" if self.rng.random() < p_yes else "no"
        if self.rng.random() < skill.accuracy:
            return truth
        others = [x for x in self.label_sets[task] if x != truth]
        return str(others[int(self.rng.integers(len(others)))]) if others else truth

    def _prediction(self, task: str, label: str, model: str, arm: str) -> Prediction:
        return Prediction(
            label=label,
            score=0.9,
            top_k=(Scored(label=label, score=0.9),),
            model=ref(model, self.digests.get(model, "")),
            arm=arm,
        )

    def _route(self, cid: str, task: str, p: Prediction) -> Route:
        h = hashlib.sha256(f"route/{cid}/{task}/{p.model.ref}".encode()).digest()
        auto = int.from_bytes(h[:8], "big") / 2**64 < self.skills[p.model.ref].coverage
        return Route(
            decision="auto" if auto else "review",
            reason="confident" if auto else "low_confidence",
            threshold=0.5,
        )

    def allocate(self, truth: Truth, at: datetime) -> tuple[Allocation, ShadowResult | None]:
        """The allocation (and shadow result, when a task is shadowed) the consumer would have
        published."""
        cid, preds, shadows = truth.complaint_id, {}, {}
        for task, plan in self.strategy.tasks.items():
            arm = plan.arm(cid)
            model = plan.challenger if arm == "canary" and plan.challenger else plan.champion
            preds[task] = self._prediction(
                task, self._label(task, truth.labels[task], model), model, arm
            )
            if plan.shadowed(cid) and plan.challenger:
                label = self._label(task, truth.labels[task], plan.challenger)
                shadows[task] = self._prediction(task, label, plan.challenger, "shadow")
        topic, partition, offset = truth.source
        source = Source(topic=topic, partition=partition, offset=offset)
        decision_id = hashlib.sha256(f"{topic}/{partition}/{offset}/{cid}".encode()).hexdigest()[
            :32
        ]
        vulnerable = preds["vulnerable"].label == "yes"
        routing = {t: self._route(cid, t, p) for t, p in preds.items() if t != "vulnerable"}
        alloc = Allocation.model_validate(
            {
                "schema": "allocation/v1",
                "decision_id": decision_id,
                "complaint_id": cid,
                "allocated_at": at,
                "team": preds["team"].label,
                "issue": preds["issue"].label,
                "vulnerable": vulnerable,
                "journey": "vulnerable" if vulnerable else "standard",
                "needs_review": any(r.decision == "review" for r in routing.values()),
                "review_reasons": [
                    f"{t}_{r.reason}" for t, r in routing.items() if r.reason != "confident"
                ],
                "predictions": preds,
                "routing": routing,
                "strategy": StrategyRef(version=self.strategy.version),
                "source": source,
                "input_sha256": truth.text_sha256,
                "latency_ms": 1.0,
                "consumer_version": "synthetic",
            }
        )
        if not shadows:
            return alloc, None
        shadow = ShadowResult.model_validate(
            {
                "schema": "shadow/v1",
                "decision_id": decision_id,
                "complaint_id": cid,
                "allocated_at": at,
                "predictions": shadows,
                "published": {t: preds[t] for t in shadows},
                "agreement": {t: p.label == preds[t].label for t, p in shadows.items()},
                "routing": {
                    t: self._route(cid, t, p) for t, p in shadows.items() if t != "vulnerable"
                },
                "strategy": StrategyRef(version=self.strategy.version),
                "source": source,
            }
        )
        return alloc, shadow


def feedback(truth: Truth, decided_at: datetime, decision_id: str | None = None) -> Feedback:
    """What people decided: the true labels."""
    labels = truth.labels
    return Feedback.model_validate(
        {
            "schema": "feedback/v1",
            "complaint_id": truth.complaint_id,
            "decision_id": decision_id,
            "team": labels["team"],
            "issue": labels["issue"],
            "vulnerable": labels["vulnerable"] == "yes",
            "labels": {t: v for t, v in labels.items() if t not in ("team", "issue", "vulnerable")},
            "decided_at": decided_at,
        }
    )


def encode(message: BaseModel) -> bytes:
    """A record value: compact JSON with its ``schema`` field, absent optionals left out (not
    null)."""
    return message.model_dump_json(by_alias=True, exclude_none=True).encode()
