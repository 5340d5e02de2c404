"""Typed messages that mirror the JSON Schemas in ``schemas/`` (frozen; the schemas are the
contract)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

MAX_TEXT_CHARS = 100_000  # the schema's maxLength; settings may lower it, never raise it


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


MilitaryStatus = Literal[
    "active_duty",
    "reserve",
    "national_guard",
    "veteran",
    "military_spouse",
    "military_dependent",
    "none",
]


class Customer(BaseModel):
    """``complaint/v1``'s optional ``customer``: facts from the bank's records that send a
    complaint to the vulnerable journey (``consumer.vulnerability``). Every field is optional; other
    fields are kept and ignored. A field of the wrong type or range is a bad message (DLQ), not a
    fact silently dropped."""

    model_config = ConfigDict(frozen=True, extra="allow")

    age: int | None = Field(None, ge=0, le=130, strict=True)
    date_of_birth: date | None = None
    military_status: MilitaryStatus | None = None
    vulnerable: StrictBool | None = None

    @model_validator(mode="after")
    def _born_in_the_past(self) -> Customer:
        if self.date_of_birth is not None and self.date_of_birth > date.today():
            raise ValueError("customer.date_of_birth is in the future")
        return self


class Complaint(BaseModel):
    """``complaint/v1``. Unknown top-level fields are kept and passed through under ``metadata``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    schema_: Literal["complaint/v1"] = Field("complaint/v1", alias="schema")
    complaint_id: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=r"\S")
    received_at: datetime | None = None
    channel: str | None = Field(None, max_length=64)
    customer: Customer | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fold_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = {
                "schema",
                "complaint_id",
                "text",
                "received_at",
                "channel",
                "customer",
                "metadata",
            }
            extra = {k: v for k, v in data.items() if k not in known}
            if extra:
                data = {k: v for k, v in data.items() if k in known}
                meta = data.get("metadata")
                # a non-object ``metadata`` is left in place so that validation rejects it
                data["metadata"] = (
                    {**extra, **meta} if isinstance(meta, dict) else meta if meta else extra
                )
        return data


SHA256 = r"^[0-9a-f]{64}$"


class ModelRef(_Frozen):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    sha256: str = Field(pattern=SHA256)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class Scored(_Frozen):
    label: str
    score: float = Field(ge=0, le=1)


Arm = Literal["champion", "canary", "shadow"]


class Prediction(_Frozen):
    label: str
    score: float = Field(ge=0, le=1)
    top_k: tuple[Scored, ...] = Field(min_length=1)
    model: ModelRef
    arm: Arm
    truncated: bool = False


class Source(_Frozen):
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class StrategyRef(_Frozen):
    version: int = Field(ge=0)


class Route(_Frozen):
    """How one multiclass head's decision was taken: by the model (``auto``) or left to the triage
    analysts (``review``), and why: ``confident`` (top score at or above the head's threshold),
    ``low_confidence`` (below it) or ``no_guarantee`` (the model's manifest found no share of
    validation it could automate at the target; every complaint goes to people)."""

    decision: Literal["auto", "review"]
    reason: Literal["confident", "low_confidence", "no_guarantee"]
    threshold: float = Field(ge=0, le=1)


VulnerableSignal = Literal[
    "customer_flag",
    "customer_age",
    "customer_military",
    "keyword_service",
    "keyword_age",
    "model",
    "champion_guardrail",
]


class Allocation(_Frozen):
    """``allocation/v1``: what the case system reads."""

    schema_: Literal["allocation/v1"] = Field("allocation/v1", alias="schema")
    decision_id: str = Field(min_length=1)
    complaint_id: str = Field(min_length=1, max_length=128)
    allocated_at: datetime
    team: str
    issue: str
    vulnerable: StrictBool
    journey: Literal["standard", "vulnerable"]
    needs_review: StrictBool
    review_reasons: tuple[str, ...] = ()
    predictions: dict[str, Prediction] = Field(min_length=1)
    # per multiclass head: auto-routed or sent to review, and why (absent before 2026-12-06)
    routing: dict[str, Route] = Field(default_factory=dict)
    # what sent the complaint to the vulnerable journey (empty: the standard journey)
    vulnerable_signals: tuple[VulnerableSignal, ...] = ()
    strategy: StrategyRef
    source: Source
    input_sha256: str = Field(pattern=SHA256)
    latency_ms: float = Field(ge=0)
    consumer_version: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class ShadowResult(_Frozen):
    """``shadow/v1``: what a shadow challenger would have decided, never read by the case system."""

    schema_: Literal["shadow/v1"] = Field("shadow/v1", alias="schema")
    decision_id: str
    complaint_id: str
    allocated_at: datetime
    predictions: dict[str, Prediction]
    published: dict[str, Prediction]
    agreement: dict[str, bool]
    # per multiclass head: whether the shadow model would have decided alone (its own thresholds)
    routing: dict[str, Route] = Field(default_factory=dict)
    strategy: StrategyRef
    source: Source


class Feedback(BaseModel):
    """``feedback/v1``: the final decision people made."""

    model_config = ConfigDict(frozen=True, extra="allow")

    schema_: Literal["feedback/v1"] = Field("feedback/v1", alias="schema")
    complaint_id: str = Field(min_length=1, max_length=128)
    decision_id: str | None = Field(None, min_length=1, max_length=128)
    team: str = Field(min_length=1)
    issue: str = Field(min_length=1)
    vulnerable: StrictBool
    labels: dict[str, str] = Field(default_factory=dict)
    decided_at: datetime

    def label(self, task: str) -> str | None:
        """The final label of ``task`` in the string form the model heads use."""
        if task == "team":
            return self.team
        if task == "issue":
            return self.issue
        if task == "vulnerable":
            return "yes" if self.vulnerable else "no"
        return self.labels.get(task)


def dump(message: BaseModel) -> bytes:
    """Serialise a message as compact UTF-8 JSON with its ``schema`` field.

    ``None`` fields are kept as ``null`` on purpose: dropping them would also rewrite pass-through
    metadata.
    """
    return message.model_dump_json(by_alias=True).encode("utf-8")
