"""Bytes from the ``complaints`` topic to a validated ``Complaint``, or a ``ContractError`` with a
DLQ reason."""

from __future__ import annotations

import json

from pydantic import ValidationError

from consumer.contracts.messages import Complaint
from consumer.errors import DecodeError, SchemaError

SCHEMA = "complaint/v1"


def decode_complaint(value: bytes | None, max_bytes: int, max_text_chars: int) -> Complaint:
    """Decode one record value. Raises ``ContractError`` whose ``code`` is one of
    ``errors.DLQ_REASONS``."""
    if value is None:
        raise DecodeError("record has no value (tombstone)", code="not_json")
    if len(value) > max_bytes:
        raise DecodeError(f"record of {len(value)} bytes exceeds {max_bytes}", code="oversized")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not UTF-8 at byte {exc.start}", code="not_utf8") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc.msg} at {exc.pos}", code="not_json") from exc
    if not isinstance(doc, dict):
        raise DecodeError(f"JSON {type(doc).__name__}, not an object", code="not_object")
    schema = doc.get("schema")
    if schema != SCHEMA:
        raise SchemaError(f"schema {str(schema)[:40]!r} is not {SCHEMA!r}", code="unknown_schema")
    body = doc.get("text")
    if isinstance(body, str):
        if not body.strip():
            raise SchemaError("text is empty", code="empty_text")
        if len(body) > max_text_chars:
            raise DecodeError(
                f"text of {len(body)} characters exceeds {max_text_chars}", code="oversized"
            )
    try:
        return Complaint.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise SchemaError(f"{where}: {first['msg']}", code="schema_violation") from exc
