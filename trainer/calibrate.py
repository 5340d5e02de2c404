"""Decision thresholds, calibrated on the validation split only (never test, never holdout).

- ``review_threshold`` (multiclass): the lowest top-score threshold at which the predictions kept
  (top score >= threshold) reach ``target_accuracy`` on validation; the rest go to human review.
  When no threshold reaches the target with at least ``min_coverage`` of rows kept, the threshold
  with the best kept accuracy at that coverage is used and ``target_met`` is false.
- ``threshold`` (binary, the ``vulnerable`` head), one of three policies:
  ``recall`` (the default): the highest threshold whose recall reaches ``min_recall`` (0.60, the
  human team's recall), i.e. find at least as many vulnerable customers as people do with the fewest
  flags; ``fbeta``: the threshold maximising F-beta; ``precision``: the highest recall whose
  precision is at least ``min_precision``. ``recall`` and ``precision`` fall back to F-beta when
  their target is unreachable. (F2 was the first default; with a weak signal, AUC 0.64 on
  validation, it flagged ~70% of complaints.)
Each returns the threshold with the validation figures it was chosen on, recorded in the manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def review_threshold(
    probs: np.ndarray, y: np.ndarray, target_accuracy: float, min_coverage: float = 0.05
) -> dict[str, Any]:
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    order = np.argsort(-top, kind="stable")
    top_sorted, correct_sorted = top[order], correct[order]
    kept = np.arange(1, len(top) + 1)
    acc = np.cumsum(correct_sorted) / kept
    # Candidate cut after position i keeps rows 0..i; only cut where the score changes (ties move
    # together).
    valid = np.r_[top_sorted[1:] < top_sorted[:-1], True] & (
        kept >= max(1, int(np.ceil(min_coverage * len(top))))
    )
    if not valid.any():
        valid[-1] = True
    ok = valid & (acc >= target_accuracy)
    target_met = bool(ok.any())
    i = (
        int(np.flatnonzero(ok)[-1])
        if target_met
        else int(np.flatnonzero(valid)[np.argmax(acc[valid])])
    )
    threshold = 0.0 if i == len(top) - 1 else float(top_sorted[i])
    return {
        "review_threshold": threshold,
        "target_accuracy": target_accuracy,
        "target_met": target_met,
        "val_coverage": float(kept[i] / len(top)),
        "val_accuracy_kept": float(acc[i]),
        "val_accuracy_all": float(correct.mean()),
        "val_rows": len(top),
    }


def _pr_curve(p_pos: np.ndarray, y_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (descending unique scores) with recall and precision of flagging score >=
    threshold."""
    order = np.argsort(-p_pos, kind="stable")
    s, t = p_pos[order], y_pos[order].astype(float)
    last_of_tie = np.r_[s[1:] < s[:-1], True]
    tp = np.cumsum(t)[last_of_tie]
    flagged = np.arange(1, len(s) + 1)[last_of_tie]
    positives = max(t.sum(), 1.0)
    return s[last_of_tie], tp / positives, tp / flagged


def binary_threshold(
    p_pos: np.ndarray,
    y_pos: np.ndarray,
    policy: str = "fbeta",
    beta: float = 2.0,
    min_precision: float = 0.5,
    min_recall: float = 0.6,
) -> dict[str, Any]:
    thr, rec, prec = _pr_curve(p_pos, y_pos)
    b2 = beta * beta
    fbeta = np.where(
        prec + rec > 0, (1 + b2) * prec * rec / np.maximum(b2 * prec + rec, 1e-12), 0.0
    )
    chosen = policy
    if policy == "recall" and (rec >= min_recall).any():
        # thresholds descend, so the first one reaching the recall target flags the fewest
        # complaints
        i = int(np.flatnonzero(rec >= min_recall)[0])
    elif policy == "precision" and (prec >= min_precision).any():
        ok = np.flatnonzero(prec >= min_precision)
        i = int(ok[np.argmax(rec[ok])])
    else:
        chosen = "fbeta"
        i = int(np.argmax(fbeta))
    return {
        "threshold": float(min(max(thr[i], 0.0), 1.0)),
        "policy": chosen,
        "beta": beta,
        "min_precision": min_precision if policy == "precision" else None,
        "min_recall": min_recall if policy == "recall" else None,
        "val_flagged_share": float(np.mean(p_pos >= thr[i])),
        "val_recall": float(rec[i]),
        "val_precision": float(prec[i]),
        "val_fbeta": float(fbeta[i]),
        "val_rows": len(p_pos),
        "val_positives": int(np.sum(y_pos)),
    }
