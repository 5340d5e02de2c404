"""Explain one past decision, on the exact artifact and input that made it (DESIGN section 7).

Order of work for one request (every step can refuse; ``explainer.errors`` names the statuses):
1. The allocation: by decision id from the index and the allocations topic, or as given (POST).
2. Task (default ``team``) must be one the decision predicted; label defaults to the decided label.
3. A text given in the request must hash to the allocation's ``input_sha256``.
4. The model: ``name@version`` must be in the registry with the recorded digest (checked even for
   cached results, so that a model withdrawn from the registry stops being explained at once).
5. The cache, keyed by (decision id, input sha256, task, label, model ref and digest, max_evals): a
   hit ends here. The input hash is in the key so that a POSTed record reusing a decision id never
   reads another's result.
6. Otherwise the text is read back from the source coordinates (and must hash to ``input_sha256``
   too), the model is loaded (its files verified), and SHAP runs within the computation slots, the
   evaluation cap and the time budget.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from consumer.contracts import schemas
from consumer.contracts.messages import Allocation
from consumer.metrics import ExplainerMetrics
from consumer.router import text_sha256
from explainer.errors import BadRequestError, DecisionNotFoundError, InputMismatchError
from explainer.index import DecisionIndex
from explainer.limits import ResultCache, Slots
from explainer.model_cache import ModelCache
from explainer.report import document
from explainer.sources import RecordSource, complaint_at

log = logging.getLogger(__name__)

DEFAULT_TASK = "team"


@dataclass(frozen=True)
class Limits:
    max_evals: int
    budget_s: float
    concurrency: int
    cache_size: int


def parse_allocation(doc: Any) -> Allocation:
    """A POSTed or indexed ``allocation/v1`` record, checked against its JSON Schema;
    ``BadRequestError`` if not."""
    problems = schemas.errors("allocation/v1", doc)
    if problems:
        raise BadRequestError("not an allocation/v1 record: " + "; ".join(problems[:3]))
    try:
        return Allocation.model_validate(doc)
    except ValidationError as exc:
        raise BadRequestError(f"not an allocation/v1 record: {exc.errors()[0]['msg']}") from exc


class ExplainService:
    def __init__(
        self,
        models: ModelCache,
        records: RecordSource,
        limits: Limits,
        allocations_topic: str,
        index: DecisionIndex | None = None,
        metrics: ExplainerMetrics | None = None,
    ) -> None:
        self.models = models
        self.records = records
        self.limits = limits
        self.index = index
        self.allocations_topic = allocations_topic
        self.metrics = metrics
        self.cache: ResultCache[dict[str, Any]] = ResultCache(limits.cache_size)
        # waiting longer than a computation's budget for a slot would only pile up requests
        self.slots = Slots(limits.concurrency, wait_s=limits.budget_s)

    def find(self, decision_id: str) -> Allocation:
        """The allocation record of ``decision_id`` (``DecisionNotFoundError`` when it is not
        indexed)."""
        where = self.index.get(decision_id) if self.index is not None else None
        if where is None:
            raise DecisionNotFoundError(
                f"decision {decision_id} is not in the index of {self.allocations_topic} (unknown, "
                "older than the "
                "lookback window, or not indexed yet); POST /v1/explanations with the allocation "
                "record instead"
            )
        value = self.records.read(self.allocations_topic, *where)
        try:
            return parse_allocation(json.loads(value or b"null"))
        except (ValueError, BadRequestError) as exc:
            raise DecisionNotFoundError(
                f"decision {decision_id}: the indexed record is not an allocation"
            ) from exc

    def explain(
        self,
        allocation: Allocation,
        task: str | None = None,
        label: str | None = None,
        text: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """``(explanation/v1 document, cache hit)`` for ``task`` and ``label`` of ``allocation``."""
        task = task or (
            DEFAULT_TASK if DEFAULT_TASK in allocation.predictions else min(allocation.predictions)
        )
        pred = allocation.predictions.get(task)
        if pred is None:
            raise BadRequestError(
                f"decision has no prediction for task {task!r}: {sorted(allocation.predictions)}"
            )
        label = label or pred.label
        if text is not None:
            _check(text, allocation, "given")
        self.models.verify(pred.model)
        key = (
            allocation.decision_id,
            allocation.input_sha256,
            task,
            label,
            pred.model.ref,
            pred.model.sha256,
            self.limits.max_evals,
        )

        def compute() -> dict[str, Any]:
            body, text_from = (
                (text, "request") if text is not None else (self._source_text(allocation), "kafka")
            )
            loaded = self.models.resolve(pred.model)
            with self.slots.hold():
                att = loaded.shap.explain(
                    body, task, label, self.limits.max_evals, self.limits.budget_s
                )
            if self.metrics is not None:
                self.metrics.seconds.observe(att.seconds)
            return document(allocation, task, att, self.limits.budget_s, text_from)

        doc, hit = self.cache.get_or_compute(key, compute)
        if hit and self.metrics is not None:
            self.metrics.cache_hits.inc()
        return doc, hit

    def _source_text(self, allocation: Allocation) -> str:
        complaint = complaint_at(self.records, allocation.source)
        if complaint.complaint_id != allocation.complaint_id:
            src = allocation.source
            raise InputMismatchError(
                f"the record at {src.topic}/{src.partition}@{src.offset} is complaint "
                f"{complaint.complaint_id}, "
                f"not {allocation.complaint_id}"
            )
        _check(complaint.text, allocation, "source")
        return complaint.text


def _check(text: str, allocation: Allocation, which: str) -> None:
    got = text_sha256(text)
    if got != allocation.input_sha256:
        raise InputMismatchError(
            f"sha256 of the {which} text is {got}, but the decision scored input "
            f"{allocation.input_sha256}: "
            "not the input of this decision, refusing to explain it"
        )
