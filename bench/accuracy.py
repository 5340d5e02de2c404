"""``python -m bench.accuracy``: the default model (int8, as served) vs a TF-IDF + logistic
regression baseline vs the human team, on the test split and on the holdout.

The model is trained with ``trainer/config/train.default.yaml`` on train/val, or reused from
the cache: ``$CA_CACHE_DIR/models/default`` (the package; ``default.key`` next to it names the
learning settings + dataset digest it was built from, not where the data lies) or a finished run
under ``$CA_CACHE_DIR/runs/default-<key>``. The baseline is trained on the same train rows, its
vulnerable threshold calibrated on val with the same policy, so the comparison is like for like. The
holdout is only scored here, never used to fit or tune anything. Prints a table; the last line is
one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import CACHE
from consumer.package import ModelPackage, load_package
from trainer import calibrate, selective, splits
from trainer.labels import IGNORE, UNKNOWN, LabelSpace, indices, load_label_space
from trainer.metrics import evaluate, mcnemar_exact, task_metrics
from trainer.run_config import TrainConfig, load_config
from trainer.scoring import Scorer

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "trainer" / "config" / "train.default.yaml"
HUMAN = {"team": {"accuracy": 0.80}, "issue": {"accuracy": 0.71}, "vulnerable": {"recall": 0.60}}
# Settings that change how a run goes, not what it learns: not part of the cache key.
OPERATIONAL = {
    "threads",
    "micro_batch_tokens",
    "checkpoint_every",
    "wandb_project",
    "wandb_mode",
    "registry_collection",
    "version",
}
# Where the labelled data lives is not what it holds: the key has the dataset digest instead, so a
# clone in another folder (or CA_DATA pointing at a copy) reuses the cached model.
LOCATION = {"data"}
# The lexical stage learns nothing when it is off, so then its settings leave the key: adding the
# stage (2026-12-03) kept every cached model's key. (The masked-LM settings predate this rule and
# stay in.)
LEXICAL = ("lexical_weight", "lexical_read_length", "lexical_buckets", "lexical_c")


def cache_key(cfg: TrainConfig, dataset_digest: str) -> str:
    """Names what a run learns from: the learning settings and the rows' digest, not how or where it
    runs."""
    config = {k: v for k, v in cfg.as_dict().items() if k not in OPERATIONAL | LOCATION}
    if not cfg.lexical_weight:
        config = {k: v for k, v in config.items() if k not in LEXICAL}
    blob = json.dumps({"config": config, "data": dataset_digest}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_package(cfg: TrainConfig, digest: str, retrain: bool = False) -> ModelPackage:
    """The cached default package for this config and data, training it first when there is none."""
    key = cache_key(cfg, digest)
    models, run_dir = CACHE / "models", CACHE / "runs" / f"default-{key}"
    target, key_file = models / "default", models / "default.key"
    if not retrain and key_file.is_file() and key_file.read_text().strip() == key:
        return load_package(target)
    if retrain or not (run_dir / "package" / "manifest.json").is_file():
        from trainer.train_command import run

        print(f"training the default model into {run_dir} (cache key {key})", file=sys.stderr)
        run(cfg, run_dir)
    if target.exists():
        shutil.rmtree(target)
    models.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run_dir / "package", target)
    key_file.write_text(key + "\n")
    return load_package(target)


def model_figures(pkg: ModelPackage, df: pd.DataFrame) -> dict[str, Any]:
    """The served decisions (int8 graph, calibrated thresholds) of ``pkg`` on ``df``."""
    return evaluate(pkg.heads, Scorer(pkg).score(list(df["text"])), df)


class TfidfBaseline:
    """Word 1-2 gram TF-IDF + one multinomial logistic regression per task (trained on train
    rows)."""

    def __init__(self, space: LabelSpace, cfg: TrainConfig) -> None:
        self.space = space
        self.cfg = cfg

    def fit(self, train: pd.DataFrame, val: pd.DataFrame) -> TfidfBaseline:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        self.vec = TfidfVectorizer(
            ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True
        )
        x = self.vec.fit_transform(train["text"])
        self.models = {}
        for task in self.space.tasks:
            weight = "balanced" if task == "vulnerable" else None
            known = np.asarray(
                train[task] != UNKNOWN
            )  # each task learns from the rows labelled for it
            model = LogisticRegression(C=8.0, max_iter=3000, class_weight=weight)
            self.models[task] = model.fit(x[known], train[task][known])
        val = val[val["vulnerable"] != UNKNOWN]
        p_val = self._proba("vulnerable", val)
        positive = np.asarray(val["vulnerable"] == "yes")
        if self.cfg.vulnerable_policy == "guarantee":  # as the trainer chooses (train_command)
            cal = selective.recall_threshold(
                p_val, positive, self.cfg.vulnerable_min_recall, self.cfg.guarantee_confidence
            )
        else:
            cal = calibrate.binary_threshold(
                p_val,
                positive,
                self.cfg.vulnerable_policy,
                self.cfg.vulnerable_beta,
                self.cfg.vulnerable_min_precision,
                self.cfg.vulnerable_min_recall,
            )
        self.threshold = cal["threshold"]
        return self

    def _proba(self, task: str, df: pd.DataFrame) -> np.ndarray:
        m = self.models[task]
        return np.asarray(
            m.predict_proba(self.vec.transform(df["text"]))[:, list(m.classes_).index("yes")]
        )

    def figures(self, df: pd.DataFrame) -> dict[str, Any]:
        out = {}
        x = self.vec.transform(df["text"])
        for task, labels in self.space.tasks.items():
            y = indices(df[task], labels)
            known = y != IGNORE
            if task == "vulnerable":
                pred = (self._proba(task, df) >= self.threshold).astype(int)
                out[task] = task_metrics(y[known], pred[known], 2, 1)
            else:
                pred = indices(self.models[task].predict(x), labels)
                out[task] = task_metrics(y[known], pred[known], len(labels))
        return out


def issue_maps(cfg: TrainConfig) -> dict[str, Any]:
    """Issue accuracy of the TF-IDF baseline trained under each issue map (v1: the retired names
    read as labels; v2: unknown), on val and test: on the rows in the current taxonomy (v2 label
    known), and once on the old definition (every row, v1 labels). A prediction is compared in the
    truth's namespace (``LabelSpace.issue`` maps a v1 name to v2 and back), so predicting a retired
    name on a current row counts as wrong. McNemar compares the two on the current rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    spaces = {"v1": load_label_space(issue_map="issue_map.v1.json"), "v2": load_label_space()}
    rows = {v: splits.load_rows(cfg.data, sp)[0] for v, sp in spaces.items()}
    if list(rows["v1"]["text"]) != list(rows["v2"]["text"]):
        raise RuntimeError("the two label maps loaded different rows")
    by_split = {
        v: {s: splits.training_rows(r, s) for s in ("train", "val", "test")}
        for v, r in rows.items()
    }
    preds: dict[str, dict[str, np.ndarray]] = {}
    for v, parts in by_split.items():
        train = parts["train"][parts["train"]["issue"] != UNKNOWN]
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True)
        model = LogisticRegression(C=8.0, max_iter=3000).fit(
            vec.fit_transform(train["text"]), train["issue"]
        )
        preds[v] = {s: model.predict(vec.transform(parts[s]["text"])) for s in ("val", "test")}
    out: dict[str, Any] = {}
    for s in ("val", "test"):
        y1, y2 = (np.asarray(by_split[v][s]["issue"]) for v in ("v1", "v2"))
        current, old = y2 != UNKNOWN, y1 != UNKNOWN
        right_current = {
            v: np.array([spaces["v2"].issue(p) for p in preds[v][s]]) == y2 for v in preds
        }
        right_old = {v: np.array([spaces["v1"].issue(p) for p in preds[v][s]]) == y1 for v in preds}
        out[s] = {
            "rows_current_taxonomy": int(current.sum()),
            "rows_all": int(old.sum()),
            **{f"{v}_accuracy_current": float(right_current[v][current].mean()) for v in preds},
            **{f"{v}_accuracy_old_definition": float(right_old[v][old].mean()) for v in preds},
            "mcnemar_current": mcnemar_exact(
                right_current["v1"][current], right_current["v2"][current]
            ),
        }
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        ("team", "accuracy"),
        ("team", "macro_f1"),
        ("issue", "accuracy"),
        ("issue", "macro_f1"),
        ("vulnerable", "recall"),
        ("vulnerable", "precision"),
    ]
    cols = [c for c in results if c != "human"]
    head = f"{'task':<11}{'metric':<11}" + "".join(f"{c:>24}" for c in cols) + f"{'human':>8}"
    lines = [head, "-" * len(head)]
    for task, metric in rows:
        cells = "".join(f"{results[c][task].get(metric, float('nan')):>24.3f}" for c in cols)
        human = HUMAN.get(task, {}).get(metric)
        lines.append(f"{task:<11}{metric:<11}{cells}{'' if human is None else f'{human:>8.2f}'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument(
        "--package", help="evaluate this package instead of the cached default model"
    )
    parser.add_argument(
        "--retrain", action="store_true", help="train even when a cached package exists"
    )
    parser.add_argument(
        "--issue-maps",
        action="store_true",
        help="only compare issue maps v1 and v2 on the TF-IDF baseline (val and test; no model)",
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    if args.issue_maps:
        figures = issue_maps(cfg)
        for split, f in figures.items():
            print(
                f"{split}: TF-IDF issue accuracy, current taxonomy ({f['rows_current_taxonomy']} "
                f"rows): v1 {f['v1_accuracy_current']:.3f}, v2 {f['v2_accuracy_current']:.3f} "
                f"(McNemar p {f['mcnemar_current']['p_value']:.2g}); old definition "
                f"({f['rows_all']} rows, v1 labels): v1 {f['v1_accuracy_old_definition']:.3f}, "
                f"v2 {f['v2_accuracy_old_definition']:.3f}"
            )
        print(json.dumps({"issue_maps": figures}))
        return 0
    space = load_label_space()
    rows, _, _ = splits.load_rows(cfg.data, space)
    digest = splits.digest(rows)
    pkg = load_package(args.package) if args.package else default_package(cfg, digest, args.retrain)
    train, val, test = (splits.training_rows(rows, s) for s in ("train", "val", "test"))
    holdout = rows[rows["split"] == "holdout"].reset_index(
        drop=True
    )  # scored only, never fitted on
    baseline = TfidfBaseline(space, cfg).fit(train, val)
    results: dict[str, dict[str, Any]] = {}
    for name, df in (("test", test), ("holdout", holdout)):
        results[f"model:{name}"] = model_figures(pkg, df)
        results[f"tfidf_lr:{name}"] = baseline.figures(df)
    results["human"] = HUMAN
    print(
        f"model {pkg.ref} (sha256 {pkg.digest[:12]}); rows: test {len(test)}, holdout "
        f"{len(holdout)}"
    )
    print(table(results))
    print(
        json.dumps(
            {"model": pkg.ref, "digest": pkg.digest, "dataset_digest": digest, "results": results}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
