"""The humans' real decisions, from the CFPB labels that ride along in each complaint's metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from trainer.labels import UNKNOWN, LabelMapError, LabelSpace, load_label_space

_SPACE: LabelSpace | None = None


def truth(metadata: dict[str, Any]) -> dict[str, str] | None:
    """team, issue and vulnerable (``yes``/``no``) as people decided them; None when the row has no
    product a team map knows, or its issue is a retired CFPB name (people today would name a
    current issue, which the data does not say): no feedback for it, as a person would leave it
    open."""
    global _SPACE
    _SPACE = _SPACE or load_label_space()
    try:
        team = _SPACE.team(metadata.get("product_family"), metadata.get("product"))
    except LabelMapError:
        return None
    issue = _SPACE.issue(metadata.get("issue"))
    if issue == UNKNOWN:
        return None
    return {"team": team, "issue": issue, "vulnerable": _SPACE.vulnerable(metadata.get("tags"))}


def feedback(allocation: dict[str, Any]) -> dict[str, Any] | None:
    """A ``feedback/v1`` record for an allocation, from the real labels in its metadata."""
    t = truth(allocation.get("metadata") or {})
    if t is None:
        return None
    return {
        "schema": "feedback/v1",
        "complaint_id": allocation["complaint_id"],
        "decision_id": allocation["decision_id"],
        "team": t["team"],
        "issue": t["issue"],
        "vulnerable": t["vulnerable"] == "yes",
        "decided_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
