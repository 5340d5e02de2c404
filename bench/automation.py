"""``python -m bench.automation [--package DIR] [--plot PNG]``: what the model may decide alone, on
the test split and the holdout, under the thresholds its manifest chose on validation.

Per multiclass head: coverage (the automated share), accuracy on it with its 95% Clopper-Pearson
interval, the accuracy of the rest (what the analysts get) and of all rows. For ``vulnerable``: the
recall and precision of the model's flag, of the keyword rule (``consumer.vulnerability``) alone and
of either, as the consumer routes the journey from the text (the customer-record signals are not in
the CFPB data: its tags *are* those facts). Then the fully automatic share: complaints whose team
and issue are both automated, so no triage analyst reads them, and those of them on the standard
journey.

Everything is scored through the consumer's own code (``trainer.scoring``: the served int8 graph,
each text alone). Nothing here is fitted: the thresholds come from the manifest, so the holdout is
only scored. The plot draws accuracy against coverage per head (every threshold, the chosen one
marked, the target dashed). Prints a table; the last line is one JSON object with every figure,
which ``bench.business`` reads.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.accuracy import DEFAULT_CONFIG, default_package
from consumer.package import ModelPackage, TaskHead, load_package
from consumer.vulnerability import keyword_signals
from trainer import splits
from trainer.labels import IGNORE, indices, load_label_space
from trainer.run_config import load_config
from trainer.scoring import Scorer
from trainer.selective import clopper_pearson

CONFIDENCE = 0.95
ROOT = Path(__file__).resolve().parents[1]
PLOT = ROOT / "docs" / "img" / "automation.png"


def _interval(k: int, n: int) -> list[float] | None:
    return [round(x, 4) for x in clopper_pearson(k, n, CONFIDENCE)] if n else None


def automated(head: TaskHead, probs: np.ndarray) -> np.ndarray:
    """Rows the consumer automates for this head (``TaskHead.automates``, as it routes)."""
    return np.broadcast_to(head.automates(probs.max(axis=1)), len(probs))


def head_figures(head: TaskHead, probs: np.ndarray, labels: pd.Series) -> dict[str, Any]:
    """Coverage and accuracy of one multiclass head on one split."""
    auto = automated(head, probs)
    y = indices(labels, head.labels)
    known = y != IGNORE
    right = (probs.argmax(axis=1) == y) & known
    k_auto, n_auto = int(right[auto].sum()), int((auto & known).sum())
    k_rest, n_rest = int(right[~auto].sum()), int((~auto & known).sum())
    return {
        "rows": len(probs),
        "labelled": int(known.sum()),
        "coverage": float(auto.mean()),
        # on the labelled rows only, as the plot's curve (rows with a retired issue have no label)
        "coverage_labelled": n_auto / int(known.sum()) if known.any() else None,
        "accuracy_automated": k_auto / n_auto if n_auto else None,
        "accuracy_automated_ci95": _interval(k_auto, n_auto),
        "automated_labelled": n_auto,
        "accuracy_review": k_rest / n_rest if n_rest else None,
        "accuracy_all": float(right.sum() / known.sum()) if known.any() else None,
        "threshold": head.review_threshold,
        "guarantee_met": head.guarantee_met,
    }


def _binary(flag: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
    tp, pos = int((flag & positive).sum()), int(positive.sum())
    return {
        "flagged_share": float(flag.mean()),
        "recall": tp / pos if pos else None,
        "recall_ci95": _interval(tp, pos),
        "precision": tp / int(flag.sum()) if flag.any() else None,
        "positives": pos,
    }


def vulnerable_figures(
    head: TaskHead, probs: np.ndarray, labels: pd.Series, texts: pd.Series
) -> dict[str, Any]:
    """The model's flag, the keyword rule's, and either (the journey the text alone decides)."""
    known = np.asarray(labels != "")
    positive = np.asarray(labels == "yes")[known]
    pos = head.labels.index(head.positive_label or "yes")
    model = np.asarray(probs[:, pos] >= head.threshold)[known]
    rule = np.array([bool(keyword_signals(t)) for t in texts])[known]
    return {
        "threshold": head.threshold,
        "model": _binary(model, positive),
        "keyword_rule": _binary(rule, positive),
        "model_or_keyword": _binary(model | rule, positive),
    }


def split_figures(pkg: ModelPackage, df: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every figure of one split, and the curves for the plot."""
    scores = Scorer(pkg).score(list(df["text"]))
    heads = pkg.heads
    out: dict[str, Any] = {"rows": len(df)}
    curves: dict[str, Any] = {}
    autos = {}
    for task, head in heads.items():
        probs = scores.probs[task]
        if head.kind == "binary":
            out[task] = vulnerable_figures(head, probs, df[task], df["text"])
            continue
        spec = pkg.manifest["tasks"][task]
        fig = head_figures(head, probs, df[task])
        if "guarantee" in spec:
            fig["guarantee"] = spec["guarantee"]
        out[task] = fig
        autos[task] = automated(head, probs)
        curves[task] = _curve(probs, indices(df[task], head.labels), head)
    if {"team", "issue"} <= autos.keys():
        both = autos["team"] & autos["issue"]
        flagged = np.zeros(len(df), dtype=bool)
        if "vulnerable" in heads:
            vh = heads["vulnerable"]
            pos = vh.labels.index(vh.positive_label or "yes")
            flagged = scores.probs["vulnerable"][:, pos] >= vh.threshold
        flagged |= np.array([bool(keyword_signals(t)) for t in df["text"]])
        yt, yi = (indices(df[t], heads[t].labels) for t in ("team", "issue"))
        pt, pi = (scores.probs[t].argmax(axis=1) for t in ("team", "issue"))
        known = both & (yt != IGNORE) & (yi != IGNORE)
        right = int(((pt == yt) & (pi == yi))[known].sum())
        out["fully_automatic"] = {
            "share": float(both.mean()),
            "share_standard_journey": float((both & ~flagged).mean()),
            "both_right": right / int(known.sum()) if known.any() else None,
            "both_right_ci95": _interval(right, int(known.sum())),
        }
    return out, curves


def _curve(probs: np.ndarray, y: np.ndarray, head: TaskHead) -> dict[str, Any]:
    """Accuracy of the automated share at every coverage (rows sorted by top score)."""
    known = y != IGNORE
    top, right = probs.max(axis=1)[known], (probs.argmax(axis=1) == y)[known]
    order = np.argsort(-top, kind="stable")
    acc = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    coverage = np.arange(1, len(order) + 1) / len(order)
    return {"coverage": coverage, "accuracy": acc, "threshold": head.review_threshold}


def plot(
    curves: dict[str, dict[str, Any]],
    results: dict[str, Any],
    targets: dict[str, float],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for c in curves.values() for t in c})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for split, style in (("test", "-"), ("holdout", "--")):
            c = curves.get(split, {}).get(task)
            if c is None:
                continue
            ax.plot(c["coverage"], c["accuracy"], style, label=f"{split}: every threshold")
            r = results[split][task]
            if r["accuracy_automated"] is not None:
                chosen = f"{split}: chosen on val"
                ax.plot(r["coverage_labelled"], r["accuracy_automated"], "o", label=chosen)
        if task in targets:
            ax.axhline(
                targets[task], color="grey", linestyle=":", label=f"target {targets[task]:.0%}"
            )
        ax.set_title(f"{task}: accuracy of the automated share")
        ax.set_xlabel("coverage (share decided by the model)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(
        "Selective automation: thresholds chosen on validation (95% guarantee), scored on test "
        "and holdout (CFPB data)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def table(results: dict[str, Any]) -> str:
    lines = []
    for split, r in results.items():
        lines.append(f"{split} ({r['rows']} rows)")
        for task, f in r.items():
            if not isinstance(f, dict) or "coverage" not in f:
                continue
            ci = f["accuracy_automated_ci95"] or [None, None]
            lines.append(
                f"  {task:<10} coverage {_pct(f['coverage'])}  accuracy automated "
                f"{_pct(f['accuracy_automated'])} [{_pct(ci[0])}, {_pct(ci[1])}]  review "
                f"{_pct(f['accuracy_review'])}  all {_pct(f['accuracy_all'])}"
            )
        v = r.get("vulnerable")
        if v:
            for name in ("model", "keyword_rule", "model_or_keyword"):
                b = v[name]
                lines.append(
                    f"  vulnerable {name:<17} recall {_pct(b['recall'])}  precision "
                    f"{_pct(b['precision'])}  flagged {_pct(b['flagged_share'])}"
                )
        fa = r.get("fully_automatic")
        if fa:
            lines.append(
                f"  fully automatic {_pct(fa['share'])} (standard journey "
                f"{_pct(fa['share_standard_journey'])}), team and issue both right "
                f"{_pct(fa['both_right'])}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.automation", description=__doc__)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--package", help="this package instead of the cached default model")
    parser.add_argument("--plot", default=str(PLOT), help=f"PNG to write (default {PLOT})")
    parser.add_argument("--splits", default="test,holdout", help="splits to score, comma-separated")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    space = load_label_space()
    rows, _, _ = splits.load_rows(cfg.data, space)
    pkg = load_package(args.package) if args.package else default_package(cfg, splits.digest(rows))
    results: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for split in args.splits.split(","):
        df = (
            rows[rows["split"] == "holdout"].reset_index(drop=True)  # scored only
            if split == "holdout"
            else splits.training_rows(rows, split)
        )
        results[split], curves[split] = split_figures(pkg, df)
    targets = {
        t: s["guarantee"]["target"]
        for t, s in pkg.manifest["tasks"].items()
        if s.get("kind") == "multiclass" and "guarantee" in s
    }
    plot(curves, results, targets, Path(args.plot))
    print(f"model {pkg.ref} (sha256 {pkg.digest[:12]}); plot {args.plot}")
    print(table(results))
    print(json.dumps({"model": pkg.ref, "digest": pkg.digest, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
