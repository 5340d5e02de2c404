"""Evaluation metrics shared by training, ``compare`` and the accuracy bench (numpy only, no torch).

``task_metrics`` gives accuracy and macro-F1 for every task, plus recall/precision of the positive
label for binary tasks. ``mcnemar_exact`` is the exact (binomial) McNemar test on paired
correctness.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binom

from consumer.package import TaskHead
from trainer.labels import IGNORE, indices
from trainer.scoring import Scores, decisions


def macro_f1(y: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    """Mean F1 over labels that occur in ``y`` or ``pred`` (sklearn's ``average="macro"`` on present
    labels)."""
    f1s = []
    for k in range(n_labels):
        tp = int(np.sum((pred == k) & (y == k)))
        fp = int(np.sum((pred == k) & (y != k)))
        fn = int(np.sum((pred != k) & (y == k)))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def binary_pr(y: np.ndarray, pred: np.ndarray, positive: int) -> tuple[float, float]:
    """(recall, precision) of the positive label; 0.0 when undefined."""
    tp = int(np.sum((pred == positive) & (y == positive)))
    pos, flagged = int(np.sum(y == positive)), int(np.sum(pred == positive))
    return (tp / pos if pos else 0.0), (tp / flagged if flagged else 0.0)


def task_metrics(
    y: np.ndarray, pred: np.ndarray, n_labels: int, positive: int | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": len(y),
        "accuracy": float(np.mean(y == pred)) if len(y) else 0.0,
        "macro_f1": macro_f1(y, pred, n_labels),
    }
    if positive is not None:
        out["recall"], out["precision"] = binary_pr(y, pred, positive)
    return out


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, float]:
    """Exact two-sided McNemar test: under H0 the discordant pairs split 50/50.

    ``b`` counts rows only A gets right, ``c`` rows only B gets right; p = min(1, 2 * P[Bin(b+c,
    1/2) <= min]).
    """
    a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    b = int(np.sum(a_correct & ~b_correct))
    c = int(np.sum(~a_correct & b_correct))
    n = b + c
    p = 1.0 if n == 0 else float(min(1.0, 2.0 * binom.cdf(min(b, c), n, 0.5)))
    return {"only_a_correct": b, "only_b_correct": c, "p_value": p}


def evaluate(heads: dict[str, TaskHead], scores: Scores, df: pd.DataFrame) -> dict[str, Any]:
    """Per-task metrics of the served decisions (thresholds applied) on the rows of ``df`` labelled
    for the task (``n`` counts them); a gold label the head does not have counts as wrong."""
    pred = decisions(heads, scores)
    out: dict[str, Any] = {}
    for task, head in heads.items():
        y = indices(df[task], head.labels)
        known = y != IGNORE
        pos = (
            head.labels.index(head.positive_label)
            if head.kind == "binary" and head.positive_label
            else None
        )
        out[task] = task_metrics(y[known], pred[task][known], len(head.labels), pos)
    out["latency_ms_per_text"] = scores.seconds_per_text * 1000
    return out


def objective(m: dict[str, Any], beta: float) -> float:
    """The sweep's single number (validation): mean of team accuracy, issue accuracy and vulnerable
    F-beta."""
    r, p = m["vulnerable"]["recall"], m["vulnerable"]["precision"]
    fbeta = (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0
    return float((m["team"]["accuracy"] + m["issue"]["accuracy"] + fbeta) / 3)
