"""Replayed predictions as one side of ``trainer compare``: the JSON lines that ``allocator replay
--jsonl`` writes (one ``allocation/v1`` document per line), read as that model's decisions.

A side given as ``FILE.jsonl`` is not scored again: its decision for a data row is the replayed
label of the row's ``complaint_id`` (the last replay of a complaint wins). ``restrict`` keeps the
rows every replayed side has, so both sides are measured, and McNemar paired, on the same rows; the
report counts the rows left out (``rows_without_replay``). A task is accepted without review when
its allocation's ``routing`` says ``auto`` (an allocation made before routing existed: it has no
``<task>_low_confidence`` reason), which is what ``compare`` counts for a package (top score at
or above the head's review threshold, its guarantee met). Nothing is timed, so a replayed side
has no latency. Labels (and the positive one of a binary task) come from the package on the other
side, or from the label space when both sides are replays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from consumer.contracts.messages import Allocation
from consumer.package import ModelPackage, TaskHead, load_package
from trainer.errors import DataError
from trainer.labels import IGNORE, VULNERABLE_LABELS, indices, load_label_space
from trainer.metrics import task_metrics


@dataclass(frozen=True)
class Replayed:
    """A replay's decisions by complaint id; ``models`` made them (``name@version`` -> sha256)."""

    path: Path
    labels: dict[str, dict[str, str]]  # complaint id -> task -> label
    low_confidence: dict[str, frozenset[str]]  # complaint id -> tasks sent to review
    models: dict[str, str]

    @property
    def ref(self) -> str:
        return ", ".join(sorted(self.models))

    @property
    def digest(self) -> str:
        return self.models[next(iter(self.models))] if len(self.models) == 1 else ""


Side = ModelPackage | Replayed


def load_replayed(path: Path) -> Replayed:
    """Read ``allocator replay --jsonl`` output; a line that is not allocation/v1 is a
    ``DataError`` naming it."""
    labels: dict[str, dict[str, str]] = {}
    low: dict[str, frozenset[str]] = {}
    models: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            alloc = Allocation.model_validate_json(line)
        except ValidationError as exc:
            raise DataError(f"{path}: line {n} is not an allocation/v1 document") from exc
        cid = alloc.complaint_id
        labels[cid] = {t: p.label for t, p in alloc.predictions.items()}
        low[cid] = frozenset(
            [t for t, r in alloc.routing.items() if r.decision == "review"]
            if alloc.routing  # allocations made before 2026-12-06 have reasons only
            else [r.removesuffix("_low_confidence") for r in alloc.review_reasons]
        )
        models |= {p.model.ref: p.model.sha256 for p in alloc.predictions.values()}
    if not labels:
        raise DataError(f"{path}: no replayed allocation in it")
    return Replayed(path, labels, low, models)


def load_side(location: str) -> Side:
    """A package folder, or a replay's JSON lines (``*.jsonl``)."""
    return load_replayed(Path(location)) if location.endswith(".jsonl") else load_package(location)


def restrict(df: pd.DataFrame, sides: Sequence[Side]) -> tuple[pd.DataFrame, int]:
    """The rows every replayed side has a decision for, and how many rows were left out."""
    if not any(isinstance(side, Replayed) for side in sides):
        return df, 0
    keep = np.ones(len(df), dtype=bool)
    for side in sides:
        if isinstance(side, Replayed):
            keep &= df["complaint_id"].isin(side.labels.keys()).to_numpy()
    if not keep.any():
        raise DataError(
            "no row of the data has a replayed decision: the replay's complaint ids are not in it"
        )
    return df[keep].reset_index(drop=True), int((~keep).sum())


def heads_of(sides: Sequence[Side]) -> Mapping[str, TaskHead] | None:
    """The task heads of the first package among ``sides`` (None when all are replays)."""
    return next((s.heads for s in sides if isinstance(s, ModelPackage)), None)


def _labels(task: str, heads: Mapping[str, TaskHead] | None) -> tuple[list[str], int | None]:
    """The task's labels and the index of its positive label (binary tasks), from ``heads`` or
    the label space."""
    if heads is not None and task in heads:
        head = heads[task]
        labels = list(head.labels)
        binary = head.kind == "binary" and head.positive_label
        return labels, labels.index(str(head.positive_label)) if binary else None
    labels = list(load_label_space().tasks.get(task, ()))
    return labels, 1 if tuple(labels) == VULNERABLE_LABELS else None


def model_metrics(
    side: Replayed, df: pd.DataFrame, heads: Mapping[str, TaskHead] | None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``compare.model_metrics`` for replayed decisions: metrics per task and per-row correctness
    on the rows labelled for the task."""
    metrics: dict[str, Any] = {}
    correct: dict[str, np.ndarray] = {}
    ids = list(df["complaint_id"])
    tasks = set.intersection(*(set(side.labels[c]) for c in ids))
    for task in sorted(t for t in tasks if t in df):
        labels, pos = _labels(task, heads)
        said = [side.labels[c][task] for c in ids]
        labels += sorted(set(said) - set(labels))  # a label the reference lacks still counts
        y = indices(df[task], labels)
        known = y != IGNORE
        p = indices(said, labels)[known]
        y = y[known]
        m = task_metrics(y, p, len(labels), pos)
        if pos is None:
            kept = np.array([task not in side.low_confidence[c] for c in ids])[known]
            m["accepted_share"] = float(kept.mean()) if len(kept) else 0.0
            m["accepted_accuracy"] = float(np.mean(p[kept] == y[kept])) if kept.any() else 0.0
        metrics[task] = m
        correct[task] = p == y
    return metrics, correct
