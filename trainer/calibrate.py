"""Point-estimate thresholds for the binary head, chosen on the validation split only (never test,
never holdout): the ``vulnerable_policy`` values other than the default ``guarantee``, whose
finite-sample version is ``trainer.selective`` (which also sets the multiclass heads' thresholds).

``binary_threshold``, one of three policies: ``recall``: the highest threshold whose validation
recall reaches ``min_recall`` (0.60, the human team's recall), i.e. find at least as many vulnerable
customers as people do with the fewest flags, on the point estimate; ``fbeta``: the threshold
maximising F-beta; ``precision``: the highest recall whose precision is at least ``min_precision``.
``recall`` and ``precision`` fall back to F-beta when their target is unreachable. (F2 was the first
default; with a weak signal, AUC 0.64 on validation, it flagged ~70% of complaints.) It returns the
threshold with the validation figures it was chosen on, recorded in the manifest.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
