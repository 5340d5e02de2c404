"""The JSON Schemas are the contract; the Python types must agree with them on valid and invalid
examples."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from consumer.contracts import schemas
from consumer.contracts.messages import Allocation, Complaint, Feedback, ShadowResult, dump
from consumer.dlq import dlq_headers

SHA = "a" * 64
MODEL = {"name": "m", "version": "1", "sha256": SHA}
PRED = {
    "label": "x",
    "score": 0.9,
    "top_k": [{"label": "x", "score": 0.9}],
    "model": MODEL,
    "arm": "champion",
}


def allocation(**over: Any) -> dict[str, Any]:
    doc = {
        "schema": "allocation/v1",
        "decision_id": "d1",
        "complaint_id": "c1",
        "allocated_at": "2026-01-01T00:00:00Z",
        "team": "t",
        "issue": "i",
        "vulnerable": False,
        "journey": "standard",
        "needs_review": False,
        "review_reasons": [],
        "predictions": {"team": PRED},
        "strategy": {"version": 3},
        "source": {"topic": "complaints", "partition": 0, "offset": 5},
        "input_sha256": SHA,
        "latency_ms": 1.5,
        "consumer_version": "0.1.0",
        "metadata": {},
    }
    return {**doc, **over}


COMPLAINTS = [
    ({"schema": "complaint/v1", "complaint_id": "1", "text": "hello"}, True),
    (
        {
            "schema": "complaint/v1",
            "complaint_id": "1",
            "text": "hi",
            "received_at": "2026-01-01T10:00:00+01:00",
            "channel": "web",
            "customer": {"age": 70, "military_status": "veteran", "segment": "retail"},
            "metadata": {"a": 1},
            "extra": [1],
        },
        True,
    ),
    ({"schema": "complaint/v1", "complaint_id": "1", "text": "hi", "customer": {"age": -1}}, False),
    (
        {
            "schema": "complaint/v1",
            "complaint_id": "1",
            "text": "hi",
            "customer": {"vulnerable": 1},
        },
        False,
    ),
    (
        {
            "schema": "complaint/v1",
            "complaint_id": "1",
            "text": "hi",
            "customer": {"date_of_birth": "1950-02-30"},
        },
        False,
    ),
    ({"schema": "complaint/v1", "complaint_id": "", "text": "hello"}, False),
    ({"schema": "complaint/v1", "complaint_id": "x" * 129, "text": "hello"}, False),
    ({"schema": "complaint/v1", "complaint_id": "1", "text": ""}, False),
    ({"schema": "complaint/v1", "complaint_id": "1", "text": " \n\t"}, False),
    ({"schema": "complaint/v1", "complaint_id": "1", "text": "x" * 100_001}, False),
    ({"schema": "complaint/v2", "complaint_id": "1", "text": "hello"}, False),
    ({"schema": "complaint/v1", "complaint_id": 1, "text": "hello"}, False),
    ({"schema": "complaint/v1", "text": "hello"}, False),
    ({"schema": "complaint/v1", "complaint_id": "1", "text": "hi", "metadata": "no"}, False),
    (
        {"schema": "complaint/v1", "complaint_id": "1", "text": "hi", "received_at": "yesterday"},
        False,
    ),
]

FEEDBACK = [
    (
        {
            "schema": "feedback/v1",
            "complaint_id": "1",
            "team": "t",
            "issue": "i",
            "vulnerable": True,
            "decided_at": "2026-01-02T00:00:00Z",
        },
        True,
    ),
    (
        {
            "schema": "feedback/v1",
            "complaint_id": "1",
            "decision_id": "d",
            "team": "t",
            "issue": "i",
            "vulnerable": False,
            "labels": {"sentiment": "angry"},
            "decided_at": "2026-01-02T00:00:00Z",
        },
        True,
    ),
    (
        {
            "schema": "feedback/v1",
            "complaint_id": "1",
            "team": "t",
            "issue": "i",
            "vulnerable": "yes",
            "decided_at": "2026-01-02T00:00:00Z",
        },
        False,
    ),
    (
        {
            "schema": "feedback/v1",
            "complaint_id": "1",
            "team": "",
            "issue": "i",
            "vulnerable": True,
            "decided_at": "2026-01-02T00:00:00Z",
        },
        False,
    ),
    (
        {
            "schema": "feedback/v1",
            "complaint_id": "1",
            "team": "t",
            "issue": "i",
            "vulnerable": True,
        },
        False,
    ),
]

ALLOCATIONS = [
    (allocation(), True),
    (
        allocation(
            journey="vulnerable",
            vulnerable=True,
            needs_review=True,
            review_reasons=["team_low_confidence"],
        ),
        True,
    ),
    (allocation(journey="urgent"), False),
    (allocation(predictions={}), False),
    (allocation(input_sha256="xyz"), False),
    (allocation(strategy={"version": -1}), False),
    (allocation(predictions={"team": {**PRED, "arm": "blue"}}), False),
    (
        allocation(
            predictions={
                "team": {**PRED, "model": {"name": "m", "version": "1", "sha256": "short"}}
            }
        ),
        False,
    ),
    (allocation(surprise=1), False),
    (
        allocation(
            routing={
                "team": {"decision": "auto", "reason": "confident", "threshold": 0.61},
                "issue": {"decision": "review", "reason": "no_guarantee", "threshold": 1.0},
            },
            vulnerable_signals=["customer_age", "keyword_service"],
            journey="vulnerable",
            vulnerable=True,
        ),
        True,
    ),
    (
        allocation(routing={"team": {"decision": "maybe", "reason": "confident", "threshold": 0}}),
        False,
    ),
    (allocation(routing={"team": {"decision": "auto", "reason": "hunch", "threshold": 0}}), False),
    (allocation(routing={"team": {"decision": "auto", "reason": "confident"}}), False),
    (allocation(vulnerable_signals=["horoscope"]), False),
]


def _python_accepts(model: type, doc: dict[str, Any]) -> bool:
    try:
        model.model_validate(doc)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("doc", "valid"), COMPLAINTS)
def test_complaint_schema_and_type_agree(doc: dict[str, Any], valid: bool) -> None:
    assert (schemas.errors("complaint/v1", doc) == []) is valid
    assert _python_accepts(Complaint, doc) is valid


@pytest.mark.parametrize(("doc", "valid"), FEEDBACK)
def test_feedback_schema_and_type_agree(doc: dict[str, Any], valid: bool) -> None:
    assert (schemas.errors("feedback/v1", doc) == []) is valid
    assert _python_accepts(Feedback, doc) is valid


@pytest.mark.parametrize(("doc", "valid"), ALLOCATIONS)
def test_allocation_schema_and_type_agree(doc: dict[str, Any], valid: bool) -> None:
    assert (schemas.errors("allocation/v1", doc) == []) is valid
    assert _python_accepts(Allocation, doc) is valid


def test_serialised_allocation_validates_against_schema() -> None:
    alloc = Allocation.model_validate(allocation(metadata={"k": None}))
    doc = json.loads(dump(alloc))
    assert schemas.errors("allocation/v1", doc) == []
    assert doc["metadata"] == {"k": None}, "pass-through metadata must survive unchanged"


def test_shadow_result_validates_against_schema() -> None:
    shadow = ShadowResult.model_validate(
        {
            "schema": "shadow/v1",
            "decision_id": "d",
            "complaint_id": "c",
            "allocated_at": "2026-01-01T00:00:00Z",
            "predictions": {"team": {**PRED, "arm": "shadow"}},
            "published": {"team": PRED},
            "agreement": {"team": True},
            "strategy": {"version": 1},
            "source": {"topic": "t", "partition": 0, "offset": 0},
        }
    )
    assert schemas.errors("shadow/v1", json.loads(dump(shadow))) == []


def test_unknown_complaint_fields_pass_through_under_metadata() -> None:
    c = Complaint.model_validate(
        {
            "schema": "complaint/v1",
            "complaint_id": "1",
            "text": "t",
            "product": "p",
            "metadata": {"m": 1},
        }
    )
    assert c.metadata == {"product": "p", "m": 1}


def test_dlq_headers_match_schema() -> None:
    class Rec:
        topic, partition, offset = "complaints", 3, 42
        headers: list[tuple[str, bytes]] = []

    headers = {k: v.decode() for k, v in dlq_headers(Rec(), "not_json", "boom")}
    assert schemas.errors("dlq-headers/v1", headers) == []
    assert schemas.errors("dlq-headers/v1", {**headers, "dlq.error.code": "surprise"}) != []
    assert schemas.errors("dlq-headers/v1", {**headers, "dlq.attempt": "0"}) != []


def test_redrive_headers_match_schema() -> None:
    from consumer.dlq import DlqRecord, redrive_headers
    from consumer.kafka_memory import MemoryRecord

    class Src:
        topic, partition, offset = "complaints", 3, 42
        headers: list[tuple[str, bytes]] = []

    rec = MemoryRecord("complaints.dlq", 0, 9, 0, b"k", b"v", dlq_headers(Src(), "not_json", "x"))
    headers = {
        k: v.decode() for k, v in redrive_headers(DlqRecord.of(rec), "complaints.dlq", "0" * 16)
    }
    assert schemas.errors("redrive-headers/v1", headers) == []
    assert headers["redrive.source.offset"] == "42"
    assert schemas.errors("redrive-headers/v1", {**headers, "redrive.selection": "x"}) != []


@pytest.mark.parametrize(
    ("schema_id", "model"),
    [
        ("complaint/v1", Complaint),
        ("allocation/v1", Allocation),
        ("shadow/v1", ShadowResult),
        ("feedback/v1", Feedback),
    ],
)
def test_every_schema_field_is_a_type_field(schema_id: str, model: type) -> None:
    fields = {f.alias or name for name, f in model.model_fields.items()}
    assert set(schemas.schema(schema_id)["properties"]) == fields
    required = {f.alias or name for name, f in model.model_fields.items() if f.is_required()}
    assert required <= set(schemas.schema(schema_id)["required"])
