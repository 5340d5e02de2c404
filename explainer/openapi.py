"""The OpenAPI 3.1 description of the explainer's HTTP API, served at ``/openapi.json``.

``EXPLANATION`` is the JSON Schema of ``explanation/v1`` (the JSON response body); tests validate
real responses against it, so the description and the code cannot drift apart silently.
"""

from __future__ import annotations

import json
from typing import Any

from consumer import __version__
from consumer.contracts import schemas

_NUM = {"type": "number"}
_STR = {"type": "string"}
_SPAN = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2, "maxItems": 2}
_WORD = {
    "type": "object",
    "required": ["text", "value", "count", "spans"],
    "description": "One word (case-insensitive) with the summed value of its occurrences.",
    "properties": {
        "text": _STR,
        "value": _NUM,
        "count": {"type": "integer", "minimum": 1},
        "spans": {"type": "array", "items": _SPAN},
    },
}

EXPLANATION: dict[str, Any] = {
    "type": "object",
    "required": [
        "schema",
        "decision_id",
        "complaint_id",
        "task",
        "label",
        "predicted",
        "model",
        "strategy",
        "source",
        "input_sha256",
        "text",
        "tokens",
        "offsets",
        "values",
        "base_value",
        "output",
        "output_space",
        "additivity",
        "reproduction",
        "top_reasons",
        "explainer",
        "truncated",
        "dropped_spans",
    ],
    "properties": {
        "schema": {"const": "explanation/v1"},
        "decision_id": _STR,
        "complaint_id": _STR,
        "allocated_at": _STR,
        "task": _STR,
        "label": {**_STR, "description": "The explained label (default: the decided one)."},
        "predicted": {"type": "object", "required": ["label", "score", "top_k", "arm"]},
        "model": {
            "type": "object",
            "required": ["name", "version", "sha256", "ref"],
            "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
        },
        "strategy": {
            "type": "object",
            "required": ["version"],
            "properties": {"version": {"type": "integer"}},
        },
        "source": {"type": "object", "required": ["topic", "partition", "offset"]},
        "input_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "text_from": {"enum": ["kafka", "request"]},
        "text": _STR,
        "truncated": {"type": "boolean"},
        "dropped_spans": {
            "type": "array",
            "items": _SPAN,
            "description": "Text the long-text policy cut.",
        },
        "tokens": {
            "type": "array",
            "items": _STR,
            "description": "Tokens the model saw, special tokens left out.",
        },
        "offsets": {
            "type": "array",
            "items": _SPAN,
            "description": "Character span of each token in text.",
        },
        "values": {
            "type": "array",
            "items": _NUM,
            "description": "SHAP value of each token (probability units).",
        },
        "base_value": {**_NUM, "description": "Model output with every token masked."},
        "output": {**_NUM, "description": "Model probability of label on the unmasked input."},
        "output_space": {"const": "probability"},
        "additivity": {
            "type": "object",
            "required": [
                "space",
                "base_value",
                "sum_values",
                "model_output",
                "error",
                "tolerance",
                "ok",
            ],
        },
        "reproduction": {
            "type": "object",
            "required": ["recorded_score", "recomputed_score", "tolerance", "ok"],
        },
        "top_reasons": {
            "type": "object",
            "required": ["for", "against"],
            "properties": {
                "for": {"type": "array", "items": _WORD},
                "against": {"type": "array", "items": _WORD},
            },
        },
        "explainer": {
            "type": "object",
            "required": ["algorithm", "masker", "masking", "max_evals", "evals", "budget_s"],
            "properties": {"masking": {"enum": ["remove", "mask_token"]}},
        },
        "created_at": _STR,
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {**_STR, "description": "Stable code, e.g. input_gone."},
        "message": _STR,
    },
}

_ERRORS = {
    "400": "Bad request: unknown task or label, malformed body (bad_request).",
    "401": "Missing or wrong bearer token (unauthorized).",
    "404": "Unknown decision id (decision_not_found).",
    "409": "Text hash differs from input_sha256 (input_mismatch), "
    "or the registry holds another digest for the "
    "decision's model version (model_digest_mismatch).",
    "410": "The input is no longer retained at its source coordinates (input_gone).",
    "422": "The record at the source coordinates is not a valid complaint (invalid_record).",
    "424": "The decision's model version is not registered or its package does not verify "
    "(model_not_registered, "
    "model_integrity, model_unavailable).",
    "429": "Every computation slot stayed busy (busy); see Retry-After.",
    "503": "Redis or Kafka unavailable (store_unavailable, broker_unavailable).",
    "504": "The explanation did not finish within the time budget (budget_exceeded).",
}


def _responses() -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {
            "description": "The explanation.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Explanation"}},
                "text/html": {"schema": {"type": "string"}},
            },
        }
    }
    err = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    out |= {code: {"description": text, "content": err} for code, text in _ERRORS.items()}
    return out


_QUERY = [
    {
        "name": "task",
        "in": "query",
        "schema": _STR,
        "description": "Task to explain (default: team).",
    },
    {
        "name": "label",
        "in": "query",
        "schema": _STR,
        "description": "Label to explain (default: the decided one).",
    },
    {"name": "format", "in": "query", "schema": {"enum": ["json", "html"], "default": "json"}},
]


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    # the allocation schema's local refs (#/$defs/...) must point into its new place in this
    # document
    raw = json.dumps(
        {k: v for k, v in schemas.schema("allocation/v1").items() if k not in ("$schema", "$id")}
    )
    allocation = json.loads(raw.replace('"#/$defs/', '"#/components/schemas/Allocation/$defs/'))
    plain = {"200": {"description": "OK", "content": {"text/plain": {"schema": _STR}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "complaints-allocation explainer",
            "version": __version__,
            "description": "Token-level SHAP explanations of past allocation decisions, "
            "computed on the exact "
            "model package (by digest) and input (by sha256) that made them.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/decisions/{decision_id}/explanation": {
                "get": {
                    "summary": "Explain a decision by id (found through the allocations index).",
                    "parameters": [
                        {"name": "decision_id", "in": "path", "required": True, "schema": _STR},
                        *_QUERY,
                    ],
                    "responses": _responses(),
                }
            },
            "/v1/explanations": {
                "post": {
                    "summary": "Explain the decision in an allocation record (text optional).",
                    "parameters": [_QUERY[2]],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ExplainRequest"}
                            }
                        },
                    },
                    "responses": _responses(),
                }
            },
            "/healthz": {"get": {"summary": "Liveness.", "security": [], "responses": plain}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: the index has caught up.",
                    "security": [],
                    "responses": plain,
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics.", "security": [], "responses": plain}
            },
            "/openapi.json": {
                "get": {"summary": "This document.", "security": [], "responses": plain}
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Explanation": EXPLANATION,
                "Error": ERROR,
                "Allocation": allocation,
                "ExplainRequest": {
                    "type": "object",
                    "required": ["allocation"],
                    "properties": {
                        "allocation": {"$ref": "#/components/schemas/Allocation"},
                        "text": {
                            **_STR,
                            "description": (
                                "The complaint text; default: read from allocation.source."
                            ),
                        },
                        "task": _STR,
                        "label": _STR,
                    },
                    "additionalProperties": False,
                },
            },
        },
    }
