"""``python -m bench.lexical_scan``: on validation only, how much a lexical model adds to an encoder
package.

    python -m bench.lexical_scan --package DIR [--wide wordpiece|word] [--read-length 1024]
                                 [--buckets 262144] [--weights 0.5]

Scores val with the package's served graph (an encoder-only package: a wide-and-deep one already
holds a lexical part), fits a lexical model on train (``wordpiece``: ``trainer.lexical`` on the
package's tokenizer, as the trainer fits it; ``word``: the accuracy bench's word 1-2 gram TF-IDF),
and prints per multiclass task the accuracy of the encoder, of the lexical model and of their
geometric mix at each weight. The figures behind docs/trainer.md's "Wide and deep" scan. The test
split and the holdout are never read.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pandas as pd

from bench.accuracy import DEFAULT_CONFIG, TfidfBaseline
from consumer.errors import ConfigError
from consumer.package import ModelPackage, load_package
from trainer import lexical, packaging, splits
from trainer.labels import IGNORE, LabelSpace, indices, load_label_space
from trainer.run_config import TrainConfig, load_config
from trainer.scoring import Scorer
from trainer.training_tokens import TrainingTokens


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    pkg = load_package(args.package)
    if "lexical" in pkg.manifest["lineage"]:
        raise ConfigError(
            f"{pkg.ref} already mixes in a lexical model: scan an encoder-only package"
        )
    cfg, space = load_config(DEFAULT_CONFIG), load_label_space()
    rows, _, _ = splits.load_rows(cfg.data, space)
    train, val = (splits.training_rows(rows, s) for s in ("train", "val"))
    deep = Scorer(pkg).score(list(val["text"]))
    tasks = [t for t, h in pkg.heads.items() if h.kind != "binary"]
    if args.wide == "word":
        wide = _word_logits(space, cfg, train, val, tasks)
    else:
        wide = _wordpiece_logits(pkg, space, args, train, val, tasks)
    results: dict[str, dict[str, float]] = {}
    for task in tasks:
        y = indices(val[task], space.tasks[task])
        known = y != IGNORE
        log_deep = np.log(deep.probs[task] + 1e-9)
        log_wide = wide[task] - np.logaddexp.reduce(
            wide[task], axis=1, keepdims=True
        )  # log-softmax
        acc = {"encoder": log_deep, "lexical": log_wide}
        for w in (float(v) for v in args.weights.split(",")):
            acc[f"mix {w:g}"] = (1 - w) * log_deep + w * log_wide
        results[task] = {
            name: float((s.argmax(axis=1) == y)[known].mean()) for name, s in acc.items()
        }
        print(f"{task:<8}" + "  ".join(f"{name} {v:.4f}" for name, v in results[task].items()))
    print(json.dumps({"package": pkg.ref, "wide": vars(args), "val_accuracy": results}))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.lexical_scan", description=__doc__)
    parser.add_argument("--package", required=True, help="an encoder-only model package")
    parser.add_argument("--wide", choices=["wordpiece", "word"], default="wordpiece")
    parser.add_argument("--read-length", type=int, default=1024)
    parser.add_argument("--buckets", type=int, default=262_144)
    parser.add_argument("--c", type=float, default=8.0)
    parser.add_argument(
        "--weights", default="0.5", help="comma-separated mix weights of the lexical model"
    )
    return parser


def _word_logits(
    space: LabelSpace, cfg: TrainConfig, train: pd.DataFrame, val: pd.DataFrame, tasks: list[str]
) -> dict[str, np.ndarray]:
    """Per task, the accuracy bench's word 1-2 gram TF-IDF model's log-probabilities on val."""
    baseline = TfidfBaseline(space, cfg).fit(train, val)
    x = baseline.vec.transform(val["text"])
    wide = {}
    for task in tasks:
        m, p = baseline.models[task], np.zeros((len(val), len(space.tasks[task])))
        p[:, [space.tasks[task].index(c) for c in m.classes_]] = m.predict_proba(x)
        wide[task] = np.log(p + 1e-9)
    return wide


def _wordpiece_logits(
    pkg: ModelPackage,
    space: LabelSpace,
    args: argparse.Namespace,
    train: pd.DataFrame,
    val: pd.DataFrame,
    tasks: list[str],
) -> dict[str, np.ndarray]:
    """Per task, ``trainer.lexical``'s logits on val, fitted on train as the trainer fits it: on the
    package's tokenizer read to ``--read-length`` wordpieces."""
    longer = packaging.draft(
        pkg.path,
        space.tasks,
        max_length=args.read_length,
        truncation="head",
        name=pkg.name,
        version=pkg.version,
    )
    read = TrainingTokens(longer)
    vocab, special = read.vocab_size, read.special_ids
    counts = lexical.count(read.encode(list(train["text"])), vocab, args.buckets, special)
    features = lexical.Features.fit(counts, vocab, args.buckets, special)
    labels = {t: indices(train[t], space.tasks[t]) for t in tasks}
    fitted = lexical.fit_wide(
        features, counts, labels, {t: len(space.tasks[t]) for t in tasks}, args.c
    )
    x = features.transform(features.counts(read.encode(list(val["text"]))))
    return {t: np.asarray(x @ w + b) for t, (w, b) in fitted.items()}


if __name__ == "__main__":
    sys.exit(main())
