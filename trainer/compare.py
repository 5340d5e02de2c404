"""``python -m trainer compare``: champion vs challenger, both ONNX packages, on the same rows.

Per task and model: accuracy and macro-F1 of the served decision (binary thresholds applied), recall
and precision of ``vulnerable``, the share accepted without review and its accuracy; per task the
exact McNemar test on paired correctness; latency per text (batch 1, one thread, the consumer's
serving shape). Writes ``report.json`` and ``report.md``; logs to W&B when given an active tracker.
Only ``val`` and ``test`` are allowed: comparing is choosing, and the holdout is never used to
choose (``bench.accuracy`` reports it). Either side may be a replay's JSON lines (``allocator replay
--jsonl``) instead of a package: its replayed decisions are compared on the rows it covers, unscored
and untimed (``trainer.replayed``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from consumer.package import ModelPackage
from trainer import replayed, splits
from trainer.data import load_source
from trainer.labels import IGNORE, indices, load_label_space
from trainer.metrics import mcnemar_exact, task_metrics
from trainer.scoring import Scorer, Scores, decisions
from trainer.tracking import Tracker

LATENCY_ROWS = 100


def latency_ms(scorer: Scorer, texts: list[str]) -> dict[str, float]:
    """Milliseconds per text scored one at a time (tokenisation included)."""
    times = []
    for t in texts:
        start = time.perf_counter()
        scorer.score([t])
        times.append((time.perf_counter() - start) * 1000)
    return {
        "mean": float(np.mean(times)),
        "p50": float(np.median(times)),
        "p95": float(np.percentile(times, 95)),
    }


def model_metrics(
    pkg: ModelPackage, scores: Scores, df: pd.DataFrame
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics per task and the per-row correctness (for McNemar) on the rows labelled for the task.
    Gold labels a head lacks count as wrong."""
    pred = decisions(pkg.heads, scores)
    metrics: dict[str, Any] = {}
    correct: dict[str, np.ndarray] = {}
    for task, head in pkg.heads.items():
        if task not in df:
            continue
        y = indices(df[task], head.labels)
        known = y != IGNORE
        y, p = y[known], pred[task][known]
        pos = (
            head.labels.index(head.positive_label)
            if head.kind == "binary" and head.positive_label
            else None
        )
        m = task_metrics(y, p, len(head.labels), pos)
        if head.kind == "multiclass":
            kept = head.automates(scores.probs[task][known].max(axis=1))
            m["accepted_share"] = float(kept.mean()) if len(kept) else 0.0
            m["accepted_accuracy"] = float(np.mean(p[kept] == y[kept])) if kept.any() else 0.0
        metrics[task] = m
        correct[task] = p == y
    return metrics, correct


def compare(
    champion: replayed.Side,
    challenger: replayed.Side,
    df: pd.DataFrame,
    tracker: Tracker | None = None,
    latency_rows: int = LATENCY_ROWS,
) -> dict[str, Any]:
    df, without = replayed.restrict(df, (champion, challenger))
    texts = list(df["text"])
    result: dict[str, Any] = {"rows": len(df), "models": {}}
    if without:
        result["rows_without_replay"] = without
    correct = {}
    for role, pkg in (("champion", champion), ("challenger", challenger)):
        if isinstance(pkg, replayed.Replayed):
            heads = replayed.heads_of((champion, challenger))
            metrics, correct[role] = replayed.model_metrics(pkg, df, heads)
            result["models"][role] = {
                "ref": pkg.ref,
                "digest": pkg.digest,
                "replay": str(pkg.path),
                "tasks": metrics,
            }
            continue
        scorer = Scorer(pkg, threads=1)
        metrics, correct[role] = model_metrics(pkg, scorer.score(texts), df)
        result["models"][role] = {
            "ref": pkg.ref,
            "digest": pkg.digest,
            "tasks": metrics,
            "latency_ms": latency_ms(scorer, texts[:latency_rows]),
        }
    shared = sorted(set(correct["champion"]) & set(correct["challenger"]))
    result["mcnemar"] = {
        t: mcnemar_exact(correct["champion"][t], correct["challenger"][t]) for t in shared
    }
    if tracker is not None and tracker.active:
        flat = {
            f"compare/{role}/{t}/{k}": v
            for role, m in result["models"].items()
            for t, tm in m["tasks"].items()
            for k, v in tm.items()
        }
        flat.update(
            {f"compare/mcnemar/{t}/p_value": r["p_value"] for t, r in result["mcnemar"].items()}
        )
        tracker.log(flat)
        tracker.summary({"compare": result})
    return result


def markdown(result: dict[str, Any], split: str) -> str:
    champ, chall = result["models"]["champion"], result["models"]["challenger"]
    lines = [
        f"# Champion vs challenger on `{split}` ({result['rows']} rows)",
        "",
        f"- champion: {_side(champ)}",
        f"- challenger: {_side(chall)}",
        "",
        "| task | metric | champion | challenger |",
        "|---|---|---:|---:|",
    ]
    for task in sorted(set(champ["tasks"]) | set(chall["tasks"])):
        a, b = champ["tasks"].get(task, {}), chall["tasks"].get(task, {})
        for k in (
            "accuracy",
            "macro_f1",
            "recall",
            "precision",
            "accepted_share",
            "accepted_accuracy",
        ):
            if k in a or k in b:
                lines.append(
                    f"| {task} | {k} | {a.get(k, float('nan')):.4f} | {b.get(k, float('nan')):.4f} "
                    "|"
                )
    lines += [
        "",
        "| task | only champion right | only challenger right | McNemar exact p |",
        "|---|---:|---:|---:|",
    ]
    for task, r in result["mcnemar"].items():
        lines.append(
            f"| {task} | {r['only_a_correct']} | {r['only_b_correct']} | {r['p_value']:.4g} |"
        )
    lines += [
        "",
        "| latency ms/text (batch 1, 1 thread) | champion | challenger |",
        "|---|---:|---:|",
    ]
    for k in ("mean", "p50", "p95"):
        lines.append(f"| {k} | {_ms(champ, k)} | {_ms(chall, k)} |")
    return "\n".join(lines) + "\n"


def _side(model: dict[str, Any]) -> str:
    replay = f", decisions replayed in `{model['replay']}`" if "replay" in model else ""
    return f"`{model['ref']}` (sha256 {model['digest'][:12]}){replay}"


def _ms(model: dict[str, Any], k: str) -> str:
    """A latency cell; a replayed side is not timed."""
    return f"{model['latency_ms'][k]:.1f}" if "latency_ms" in model else "-"


def compare_cli(args: argparse.Namespace) -> int:
    space = load_label_space()
    frame, _ = load_source(args.data, space)
    df = splits.training_rows(splits.prepare([frame]), args.split)  # refuses the holdout
    if args.limit:
        df = df.sample(n=min(args.limit, len(df)), random_state=0).reset_index(drop=True)
    tracker = Tracker.start(
        "complaints-allocation", vars(args) | {"func": None}, args.wandb_mode, "compare"
    )
    try:
        result = compare(
            replayed.load_side(args.champion), replayed.load_side(args.challenger), df, tracker
        )
    finally:
        tracker.finish()
    result["split"] = args.split
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out / "report.md").write_text(markdown(result, args.split), encoding="utf-8")
    print(markdown(result, args.split))
    return 0
