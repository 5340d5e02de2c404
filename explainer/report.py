"""The ``explanation/v1`` document: what the HTTP API returns as JSON and what the HTML page is
rendered from.

Shape (the OpenAPI description in ``explainer.openapi`` has the full schema, and a test validates
against it): ``tokens``, ``offsets`` (character spans in ``text``) and ``values`` are parallel
arrays over the tokens the model saw, special tokens left out (their value is always 0). Values are
contributions to the *probability* of ``label``: ``base_value + sum(values)`` reproduces ``output``
(the model on the unmasked input) within ``ADDITIVITY_TOLERANCE``; ``reproduction`` compares
``output`` with the score the allocation recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from consumer import __version__
from consumer.contracts.messages import Allocation
from explainer.attribution import ALGORITHM, OUTPUT_SPACE, Attribution

SCHEMA = "explanation/v1"
# probability units; Owen values are exactly efficient, this is float32 noise
ADDITIVITY_TOLERANCE = 1e-4
REPRODUCTION_TOLERANCE = 1e-4  # the allocation records scores rounded to 6 decimals
TOP_REASONS = 8


def _shap_version() -> str:
    try:
        return metadata.version("shap")
    except metadata.PackageNotFoundError:
        return "unknown"


def words(att: Attribution) -> list[dict[str, Any]]:
    """Word-level contributions: word pieces (``##x``) summed into the word they continue."""
    out: list[dict[str, Any]] = []
    view = att.view
    for token, off, special, value in zip(
        view.tokens, view.offsets, view.special, att.values, strict=True
    ):
        if special or off is None:
            continue
        if token.startswith("##") and out and out[-1]["end"] == off[0]:
            out[-1]["end"], out[-1]["value"] = off[1], out[-1]["value"] + value
        else:
            out.append({"start": off[0], "end": off[1], "value": value})
    for w in out:
        w["text"] = view.text[w["start"] : w["end"]]
    return out


def top_reasons(att: Attribution, n: int = TOP_REASONS) -> dict[str, list[dict[str, Any]]]:
    """The words that raise (``for``) and lower (``against``) the probability most. Occurrences of
    one word (case-insensitive) are summed: a word repeated twenty times is one reason, with its
    ``count`` and ``spans``."""
    grouped: dict[str, dict[str, Any]] = {}
    for w in words(att):
        g = grouped.setdefault(
            w["text"].lower(), {"text": w["text"], "value": 0.0, "count": 0, "spans": []}
        )
        g["value"] += w["value"]
        g["count"] += 1
        g["spans"].append([w["start"], w["end"]])
    ws = list(grouped.values())
    pos = sorted((w for w in ws if w["value"] > 0), key=lambda w: -w["value"])[:n]
    neg = sorted((w for w in ws if w["value"] < 0), key=lambda w: w["value"])[:n]
    return {"for": pos, "against": neg}


def document(
    allocation: Allocation, task: str, att: Attribution, budget_s: float, text_from: str
) -> dict[str, Any]:
    """The explanation of ``task`` of ``allocation`` from ``att``; ``text_from`` is ``kafka`` or
    ``request``."""
    pred = allocation.predictions[task]
    view = att.view
    keep = [i for i, s in enumerate(view.special) if not s]
    total = sum(att.values)
    recorded = (
        pred.score
        if att.label == pred.label
        else next((s.score for s in pred.top_k if s.label == att.label), None)
    )
    return {
        "schema": SCHEMA,
        "decision_id": allocation.decision_id,
        "complaint_id": allocation.complaint_id,
        "allocated_at": allocation.allocated_at.isoformat().replace("+00:00", "Z"),
        "task": task,
        "label": att.label,
        "predicted": {
            "label": pred.label,
            "score": pred.score,
            "top_k": [{"label": s.label, "score": s.score} for s in pred.top_k],
            "arm": pred.arm,
        },
        "model": {**pred.model.model_dump(), "ref": pred.model.ref},
        "strategy": {"version": allocation.strategy.version},
        "source": allocation.source.model_dump(),
        "input_sha256": allocation.input_sha256,
        "text_from": text_from,
        "text": view.text,
        "truncated": view.truncated,
        "dropped_spans": [list(d) for d in view.dropped],
        "tokens": [view.tokens[i] for i in keep],
        "offsets": [list(view.offsets[i] or (0, 0)) for i in keep],
        "values": [att.values[i] for i in keep],
        "base_value": att.base_value,
        "output": att.output,
        "output_space": OUTPUT_SPACE,
        **_checks(att, recorded, total),
        "top_reasons": top_reasons(att),
        "explainer": _explainer_facts(att, budget_s),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def _checks(att: Attribution, recorded: float | None, total: float) -> dict[str, Any]:
    """Additivity (base value + sum of values = the model's output) and reproduction (the
    recomputed score equals the recorded one; None when the label was not in the recorded top-k)."""
    return {
        "additivity": {
            "space": OUTPUT_SPACE,
            "base_value": att.base_value,
            "sum_values": total,
            "model_output": att.output,
            "error": att.additivity_error,
            "tolerance": ADDITIVITY_TOLERANCE,
            "ok": att.additivity_error <= ADDITIVITY_TOLERANCE,
        },
        "reproduction": {
            "recorded_score": recorded,
            "recomputed_score": att.output,
            "abs_diff": None if recorded is None else abs(att.output - recorded),
            "tolerance": REPRODUCTION_TOLERANCE,
            "ok": None
            if recorded is None
            else abs(att.output - recorded) <= REPRODUCTION_TOLERANCE,
        },
    }


def _explainer_facts(att: Attribution, budget_s: float) -> dict[str, Any]:
    """How the explanation was computed: algorithm, masker, evaluations, time, versions."""
    return {
        "algorithm": ALGORITHM,
        "masker": att.masker,
        "masking": att.masking,
        "max_evals": att.max_evals,
        "evals": att.evals,
        "budget_s": budget_s,
        "seconds": round(att.seconds, 3),
        "shap_version": _shap_version(),
        "version": __version__,
    }
