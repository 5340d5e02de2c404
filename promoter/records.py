"""The promoter's view of its three input topics: decoding, and the compact forms it keeps in Redis.

Only what the join, the evaluation and the export need is kept (never the complaint text): a
published allocation is ~300 bytes in Redis instead of ~2 KB on the topic. ``decode`` never raises:
a record that is not UTF-8 JSON of the topic's schema comes back as ``Decoded`` with ``error`` set,
to be counted as malformed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from consumer.contracts.messages import Allocation, Feedback, Prediction, Route, ShadowResult

Kind = Literal["allocation", "shadow", "feedback"]
KINDS: tuple[Kind, ...] = ("allocation", "shadow", "feedback")
# the vulnerable head's positive label, as ``Feedback.label("vulnerable")`` spells it
POSITIVE = "yes"


@dataclass(frozen=True)
class Pred:
    """One task's prediction: label, the model ``name@version`` that made it, its strategy arm, and
    whether the model decided alone (``auto``: the allocation's ``routing``; None for a binary head
    or an allocation made before routing existed)."""

    label: str
    model: str
    arm: str
    auto: bool | None = None

    @property
    def version(self) -> str:
        return self.model.rpartition("@")[2]

    @classmethod
    def of(cls, p: Prediction, route: Route | None = None) -> Pred:
        return cls(p.label, p.model.ref, p.arm, None if route is None else route.decision == "auto")

    def to_list(self) -> list[Any]:
        # the 4th element only when known, so records written before it read back the same
        base: list[Any] = [self.label, self.model, self.arm]
        return base if self.auto is None else [*base, self.auto]


def model_flag(preds: Mapping[str, Pred]) -> bool | None:
    """Whether the model that made the ``vulnerable`` prediction flagged it (None: no such
    prediction). Not the allocation's ``vulnerable``, which the customer record and the keyword rule
    also set: live recall and the guardrail measure models."""
    own = preds.get("vulnerable")
    return None if own is None else own.label == POSITIVE


def _preds(doc: dict[str, list[Any]]) -> dict[str, Pred]:
    return {task: Pred(*v) for task, v in doc.items()}


def _preds_of(preds: dict[str, Prediction], routing: dict[str, Route]) -> dict[str, Pred]:
    return {t: Pred.of(p, routing.get(t)) for t, p in preds.items()}


@dataclass(frozen=True)
class AllocRec:
    decision_id: str
    allocated_at: datetime
    strategy_version: int
    source: tuple[
        str, int, int
    ]  # topic, partition, offset of the complaint: where the export finds the text
    input_sha256: str
    vulnerable: bool  # the published flag (the allocation's ``vulnerable``: any signal)
    predictions: dict[str, Pred]

    def to_json(self) -> str:
        return json.dumps(
            {
                "d": self.decision_id,
                "t": self.allocated_at.isoformat(),
                "v": self.strategy_version,
                "src": list(self.source),
                "sha": self.input_sha256,
                "vul": self.vulnerable,
                "p": {t: p.to_list() for t, p in self.predictions.items()},
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> AllocRec:
        d = json.loads(raw)
        src = d["src"]
        return cls(
            d["d"],
            datetime.fromisoformat(d["t"]),
            d["v"],
            (src[0], src[1], src[2]),
            d["sha"],
            d["vul"],
            _preds(d["p"]),
        )

    @classmethod
    def of(cls, a: Allocation) -> AllocRec:
        return cls(
            a.decision_id,
            a.allocated_at,
            a.strategy.version,
            (a.source.topic, a.source.partition, a.source.offset),
            a.input_sha256,
            a.vulnerable,
            _preds_of(a.predictions, a.routing),
        )


@dataclass(frozen=True)
class ShadowRec:
    decision_id: str
    predictions: dict[str, Pred]

    def to_json(self) -> str:
        return json.dumps(
            {
                "d": self.decision_id,
                "p": {t: p.to_list() for t, p in self.predictions.items()},
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> ShadowRec:
        d = json.loads(raw)
        return cls(d["d"], _preds(d["p"]))

    @classmethod
    def of(cls, s: ShadowResult) -> ShadowRec:
        return cls(s.decision_id, _preds_of(s.predictions, s.routing))


@dataclass(frozen=True)
class FeedbackRec:
    decision_id: str | None
    decided_at: datetime
    labels: dict[
        str, str
    ]  # every task's final label, as Feedback.label gives it ("yes"/"no" for vulnerable)

    @property
    def vulnerable(self) -> bool:
        return self.labels.get("vulnerable") == POSITIVE

    def to_json(self) -> str:
        return json.dumps(
            {"d": self.decision_id, "t": self.decided_at.isoformat(), "l": self.labels}
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> FeedbackRec:
        d = json.loads(raw)
        return cls(d["d"], datetime.fromisoformat(d["t"]), dict(d["l"]))

    @classmethod
    def of(cls, f: Feedback) -> FeedbackRec:
        labels = {
            **f.labels,
            "team": f.team,
            "issue": f.issue,
            "vulnerable": f.label("vulnerable") or "no",
        }
        return cls(f.decision_id, f.decided_at, labels)


Body = AllocRec | ShadowRec | FeedbackRec
_MODELS: dict[Kind, Any] = {"allocation": Allocation, "shadow": ShadowResult, "feedback": Feedback}
_COMPACT: dict[Kind, Any] = {"allocation": AllocRec, "shadow": ShadowRec, "feedback": FeedbackRec}


@dataclass(frozen=True)
class Decoded:
    """One input record: where it came from, and either its compact body or why it was refused."""

    kind: Kind
    topic: str
    partition: int
    offset: int
    complaint_id: str = ""
    body: Body | None = None
    error: str = ""


def decode(kind: Kind, topic: str, partition: int, offset: int, value: bytes | None) -> Decoded:
    """Validate ``value`` against the topic's schema (the pydantic type mirrors it); never
    raises."""
    where = (kind, topic, partition, offset)
    if value is None:
        return Decoded(*where, error="tombstone: no value")
    try:
        message = _MODELS[kind].model_validate_json(value)
    except ValidationError as exc:
        # no input values in the reason: they may hold a complaint id, which stays out of logs
        problems = exc.errors(include_url=False, include_input=False, include_context=False)[:3]
        reason = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in problems
        )
        return Decoded(*where, error=reason[:300])
    return Decoded(*where, complaint_id=message.complaint_id, body=_COMPACT[kind].of(message))
