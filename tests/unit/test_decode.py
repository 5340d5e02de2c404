from __future__ import annotations

import json

import pytest

from consumer.decode import decode_complaint
from consumer.errors import DLQ_REASONS, ContractError


def ok(**kw: object) -> bytes:
    return json.dumps(
        {"schema": "complaint/v1", "complaint_id": "c1", "text": "my card was charged twice", **kw}
    ).encode()


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"\xff\xfe not utf8", "not_utf8"),
        (b"{not json", "not_json"),
        (None, "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (ok(schema="complaint/v0"), "unknown_schema"),
        (json.dumps({"complaint_id": "c", "text": "t"}).encode(), "unknown_schema"),
        (ok(text="   "), "empty_text"),
        (ok(text=""), "empty_text"),
        (ok(text="x" * 2000), "oversized"),
        (b"x" * 5000, "oversized"),
        (ok(complaint_id=""), "schema_violation"),
        (ok(complaint_id=7), "schema_violation"),
        (ok(received_at="not a date"), "schema_violation"),
        # a customer fact of the wrong type is a bad message, never a signal silently dropped
        (ok(customer={"age": "seventy"}), "schema_violation"),
        (ok(customer={"age": 70.5}), "schema_violation"),
        (ok(customer={"age": 131}), "schema_violation"),
        (ok(customer={"date_of_birth": "1950-13-01"}), "schema_violation"),
        (ok(customer={"date_of_birth": "2999-01-01"}), "schema_violation"),
        (ok(customer={"military_status": "general"}), "schema_violation"),
        (ok(customer={"vulnerable": "yes"}), "schema_violation"),
        (ok(customer=[70]), "schema_violation"),
    ],
)
def test_bad_input_gets_its_reason(value: bytes | None, code: str) -> None:
    with pytest.raises(ContractError) as info:
        decode_complaint(value, max_bytes=4096, max_text_chars=1000)
    assert info.value.code == code
    assert code in DLQ_REASONS


def test_valid_complaint_decodes_with_metadata() -> None:
    c = decode_complaint(ok(product="Mortgage"), max_bytes=4096, max_text_chars=1000)
    assert c.complaint_id == "c1"
    assert c.metadata == {"product": "Mortgage"}


def test_customer_facts_decode_and_other_fields_are_kept() -> None:
    c = decode_complaint(
        ok(customer={"age": 70, "military_status": "veteran", "vulnerable": True, "segment": "x"}),
        max_bytes=4096,
        max_text_chars=1000,
    )
    assert c.customer is not None
    assert (c.customer.age, c.customer.military_status, c.customer.vulnerable) == (
        70,
        "veteran",
        True,
    )


def test_a_bad_customer_fact_is_named_but_its_value_is_not() -> None:
    """The DLQ headers carry the error message: it names the field, never the personal value."""
    with pytest.raises(ContractError) as info:
        decode_complaint(ok(customer={"date_of_birth": "1871-02-30"}), 4096, 1000)
    assert "customer.date_of_birth" in str(info.value)
    assert "1871" not in str(info.value)
