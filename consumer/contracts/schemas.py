"""Load the JSON Schema files shipped in this package and validate documents against them."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_FILES = {
    "complaint/v1": "complaint.v1.json",
    "allocation/v1": "allocation.v1.json",
    "shadow/v1": "shadow.v1.json",
    "feedback/v1": "feedback.v1.json",
    "dlq-headers/v1": "dlq-headers.v1.json",
    "redrive-headers/v1": "redrive-headers.v1.json",
    "replay-headers/v1": "replay-headers.v1.json",
    "model-manifest/v1": "manifest.v1.json",
    "strategy/v1": "strategy.v1.json",
}


@cache
def schema(schema_id: str) -> dict[str, Any]:
    """The JSON Schema document registered under ``schema_id`` (e.g. ``"allocation/v1"``)."""
    text = (
        resources.files("consumer.contracts")
        .joinpath("schemas", SCHEMA_FILES[schema_id])
        .read_text("utf-8")
    )
    doc: dict[str, Any] = json.loads(text)
    return doc


@cache
def _registry() -> Registry:
    # schemas refer to each other by their absolute $id (urn:complaints-allocation:<name>:<version>)
    return Registry().with_resources(
        (schema(sid)["$id"], Resource.from_contents(schema(sid))) for sid in SCHEMA_FILES
    )


@cache
def validator(schema_id: str) -> Draft202012Validator:
    return Draft202012Validator(
        schema(schema_id), registry=_registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def errors(schema_id: str, doc: Any) -> list[str]:
    """Human-readable violations of ``doc`` against the schema; empty when valid."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator(schema_id).iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]
