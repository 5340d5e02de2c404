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
