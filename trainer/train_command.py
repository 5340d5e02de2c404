"""``python -m trainer train``: the retraining job, its stages in this order.

1. **data**: every ``--data`` source combined and split (``splits.load_rows``), and its digest.
2. **tokens**: the package's ``tokenizer.json`` is written first; training reads it through the
   consumer's own encoder on a draft of the package (``training_tokens``, ``packaging.draft``).
3. **pretrain** (``mlm_epochs`` > 0): masked-LM adaptation of the encoder (``pretrain``).
4. **finetune**: the main fine-tune and any soup ingredients (``finetune``, ``fit``).
5. **lexical** (``lexical_weight`` > 0): a TF-IDF model mixed into the same graph (``lexical``).
6. **export**: fp32 ONNX and its parity with PyTorch, then int8 (``export``).
7. **calibrate**: thresholds on validation scores of the served graph (``calibrate``), then the
   int8 agreement gate at those thresholds.
8. **evaluate**: val and test metrics of the served decisions (``metrics``, ``scoring``).
9. **package**: the manifest, written last (``packaging``), and the W&B artifacts (``tracking``).
   ``train_cli`` then pushes (``push``) and registers (``register``) when asked.

Order matters for honesty: thresholds are calibrated on validation scores of the *served* (int8)
graph, scored by the consumer's own inference code, so they apply to the numbers the consumer sees;
test figures come from the same graph after calibration; the holdout is never trained, tuned or
scored here (``splits.training_rows`` refuses it); its texts are read only to keep copies of them
out of training (``splits.guard_holdout``, the masked-LM corpus). Outputs under ``out``:
``package/`` (the model package), ``checkpoints/``, ``work/`` (the fine-tuned PyTorch model) and
``train_report.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from consumer.package import ModelPackage, TaskHead
from trainer import calibrate, export, lexical, model, packaging, pretrain, selective, splits
from trainer.data import load_texts
from trainer.errors import DataError
from trainer.finetune import FineTune
from trainer.labels import IGNORE, LabelSpace, indices, load_label_space
from trainer.metrics import evaluate, objective
from trainer.run_config import TrainConfig, load_config
from trainer.scoring import Scorer, Scores
from trainer.step_loop import Encoded
from trainer.tracking import Tracker
from trainer.training_tokens import TrainingTokens


def train_cli(args: argparse.Namespace) -> int:
    """The ``train`` command: the config from ``--config`` and the flags, the hub repo checked
    before training when pushing, ``run``, then push and register when asked. Prints one JSON line
    per push or registration and one for the package, last."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    cfg = load_config(args.config, **overrides)
    if not cfg.version:
        cfg = cfg.replace(version=f"{datetime.now(UTC):%Y%m%d%H%M%S}-s{cfg.seed}")
    if args.push_to_hub:
        from trainer.push import ensure_repo

        # a missing token or a wrong repo fails now, not after hours of training
        ensure_repo(args.push_to_hub)
    pkg = run(cfg, Path(args.out or f"artifacts/runs/{cfg.version}"), resume=args.resume)
    location = str(pkg.path)
    if args.push_to_hub:
        from trainer.push import push_to_hub

        location = push_to_hub(pkg.path, args.push_to_hub)
        print(json.dumps({"pushed": location}))
    if args.register:
        from trainer.register import register

        print(json.dumps({"registered": register(location)}))
    test = pkg.manifest["metrics"].get("test", {})
    print(
        json.dumps({"package": str(pkg.path), "ref": pkg.ref, "digest": pkg.digest, "test": test})
    )
    return 0


@dataclass(frozen=True)
class _Job:
    """What the stages of one run share: its settings, output folder, label space, the three splits
    it reads, their digest, the base model, the version and the W&B run."""

    cfg: TrainConfig
    out: Path
    space: LabelSpace
    train_df: pd.DataFrame
    val_df: pd.DataFrame
    test_df: pd.DataFrame
    digest: str
    base: str
    version: str
    tracker: Tracker

    @property
    def pkg_dir(self) -> Path:
        return self.out / "package"

    def draft(self, max_length: int, truncation: str) -> ModelPackage:
        """The package being built, read up to ``max_length`` ids (see ``packaging.draft``)."""
        return packaging.draft(
            self.pkg_dir,
            self.space.tasks,
            max_length=max_length,
            truncation=truncation,
            name=self.cfg.name,
            version=self.version,
        )

    def draft_graphs(self) -> tuple[ModelPackage, ModelPackage]:
        """``(fp32, served)``: the package as it will serve (``serving_length``, ``truncation``),
        once with each graph file."""
        return packaging.draft_graphs(
            self.pkg_dir,
            self.space.tasks,
            max_length=self.cfg.serving_length,
            truncation=self.cfg.truncation,
            name=self.cfg.name,
            version=self.version,
        )


def run(cfg: TrainConfig, out: Path, *, resume: bool = False) -> ModelPackage:
    """Train, export, calibrate and package one model into ``out`` (see the module docstring);
    returns the verified package. ``resume`` continues from the checkpoints under ``out``."""
    started = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    space = load_label_space()
    rows, every_row, data_summary = splits.load_rows(
        cfg.data, space, limit_rows=cfg.limit_rows, seed=cfg.seed
    )
    job = _start(cfg, out, space, rows)
    try:
        job.tracker.log_dataset(job.digest, list(cfg.data), data_summary, cfg.wandb_upload_data)
        served, summary = _train(job, every_row, resume)
        package = _publish(job, served, summary)
        report = {
            "package": str(job.pkg_dir),
            "ref": package.ref,
            "digest": package.digest,
            "train": summary,
            "data": data_summary,
            "metrics": package.manifest["metrics"],
            "wall_seconds": time.perf_counter() - started,
        }
        (out / "train_report.json").write_text(
            json.dumps(report, indent=2, default=str), encoding="utf-8"
        )
        job.tracker.summary(
            {"wall_seconds": report["wall_seconds"], "package_digest": package.digest}
        )
        return package
    finally:
        job.tracker.finish()


def _start(cfg: TrainConfig, out: Path, space: LabelSpace, rows: pd.DataFrame) -> _Job:
    """The run's splits, digest, base model and version, and its W&B run (started here)."""
    digest = splits.digest(rows)
    train_df, val_df, test_df = (splits.training_rows(rows, s) for s in ("train", "val", "test"))
    base = cfg.base_model or str(model.default_base_model())
    version = cfg.version or f"{datetime.now(UTC):%Y%m%d%H%M%S}-s{cfg.seed}"
    tracker = Tracker.start(
        cfg.wandb_project,
        {**cfg.as_dict(), "base_model": base, "version": version},
        cfg.wandb_mode,
        directory=out / "wandb",
    )
    return _Job(cfg, out, space, train_df, val_df, test_df, digest, base, version, tracker)


def _train(
    job: _Job, every_row: pd.DataFrame, resume: bool
) -> tuple[export.Servable, dict[str, Any]]:
    """Stages 2-5: the package's tokenizer, the optional masked-LM adaptation, the fine-tune (and
    soup), the optional lexical mix. Returns the module to export and the training summary."""
    cfg = job.cfg
    job.pkg_dir.mkdir(parents=True, exist_ok=True)
    base_tokenizer = packaging.base_tokenizer(job.base, job.out / "work")
    packaging.write_tokenizer(base_tokenizer, job.pkg_dir, cfg.serving_length)
    tokens = TrainingTokens(job.draft(cfg.max_length, cfg.truncation))
    train_enc, val_enc = (
        encode(job.train_df, tokens, job.space),
        encode(job.val_df, tokens, job.space),
    )
    t0 = time.perf_counter()
    tune_base, adaptation = job.base, None
    if cfg.mlm_epochs:
        tune_base, adaptation = adapt_encoder(job, every_row, tokens, resume)
    # W&B steps only grow: the fine-tune's are counted on from the masked-LM stage's
    offset = adaptation["steps"] if adaptation else 0
    tune = FineTune(
        tune_base,
        job.space,
        train_enc,
        val_enc,
        tokens.pad_id,
        job.digest,
        job.tracker,
        resume,
        offset,
    )
    net, summary = tune.run(cfg, job.out / "checkpoints")
    summary["mlm"] = adaptation
    if cfg.soup_seeds:
        net, summary = tune.soup(cfg, net, summary, job.out)
    summary["train_seconds"] = time.perf_counter() - t0
    net.save(job.out / "work")
    if not cfg.lexical_weight:
        return net, summary
    read = TrainingTokens(job.draft(cfg.lexical_read_length, "head"))
    texts = list(job.train_df["text"])
    served, summary["lexical"] = lexical.wide_and_deep(net, read, texts, train_enc.labels, cfg)
    job.tracker.log({f"lexical/{k}": summary["lexical"][k] for k in ("seconds", "features_used")})
    return served, summary


def encode(df: pd.DataFrame, tokens: TrainingTokens, space: LabelSpace) -> Encoded:
    """The ids of ``df``'s texts and the label indices of each task."""
    labels = {task: indices(df[task], names) for task, names in space.tasks.items()}
    return Encoded(ids=tokens.encode(list(df["text"])), labels=labels)


def adapt_encoder(
    job: _Job, every_row: pd.DataFrame, tokens: TrainingTokens, resume: bool
) -> tuple[str, dict[str, Any]]:
    """Masked-LM adaptation of the base model on the training texts plus ``cfg.mlm_data``, never on
    a text of val, test or holdout (``every_row`` holds them all, sampled or not). Returns the
    adapted encoder's folder and the summary."""
    cfg = job.cfg
    extra = [t for src in cfg.mlm_data for t in load_texts(src)]
    evaluation = every_row.loc[every_row["split"] != "train", "text"]
    texts = pretrain.corpus(job.train_df["text"], extra, evaluation)
    mask_id = tokens.token_id("[MASK]")
    if mask_id is None:
        raise DataError(
            f"{job.base}: the tokenizer has no [MASK] token, so it cannot be adapted with masked LM"
        )
    folder, summary = pretrain.adapt(
        job.base,
        Encoded(ids=tokens.encode(texts.texts), labels={}),
        cfg,
        job.out / "checkpoints-mlm",
        digest=texts.digest,
        pad_id=tokens.pad_id,
        mask_id=mask_id,
        special_ids=tokens.special_ids,
        resume=resume,
        on_log=lambda metrics, step: job.tracker.log(metrics, step=step),
    )
    summary = {
        **summary,
        "sources": list(cfg.mlm_data),
        "excluded_evaluation_texts": texts.excluded,
    }
    job.tracker.log({"mlm/final_loss": summary["final_loss"], "mlm/texts": summary["texts"]})
    return str(folder), summary


def _publish(job: _Job, net: export.Servable, train_summary: dict[str, Any]) -> ModelPackage:
    """Stages 6-9: export, calibrate on validation, gate int8, evaluate on test, write and log the
    package."""
    cfg = job.cfg
    fp32, served = job.draft_graphs()
    check_texts = list(job.val_df["text"][: cfg.check_rows])
    export.export_fp32(net, fp32.onnx_path)
    max_diff = export.check_parity(net, fp32, check_texts, cfg.parity_tolerance)
    recipe = export.quantize_int8(fp32.onnx_path, served.onnx_path) if cfg.quantize else None
    if recipe is None:
        fp32.onnx_path.replace(served.onnx_path)
    scorer = Scorer(served, threads=cfg.threads)
    # Thresholds are calibrated on the graph that will be served, so they mean what the consumer
    # sees.
    val_scores = scorer.score(list(job.val_df["text"]))
    heads = calibrate_heads(job.space, job.val_df, val_scores, cfg)
    agreement = _int8_agreement(job, fp32, served, heads, check_texts, recipe)
    report = export.ExportReport(
        export.OPSET, max_diff, cfg.parity_tolerance, min(agreement.values()), agreement, recipe
    )
    metrics = _metrics(job, heads, scorer, val_scores, train_summary)
    package = packaging.write_package(
        job.pkg_dir,
        name=cfg.name,
        version=job.version,
        heads=heads,
        report=report,
        max_length=served.max_length,
        truncation=served.truncation,
        metrics=metrics,
        quantized=cfg.quantize,
        lineage=_lineage(job, train_summary),
        description=_description(job, train_summary),
    )
    job.tracker.log_package(job.pkg_dir, package.manifest, cfg.registry_collection)
    return package


def _int8_agreement(
    job: _Job,
    fp32: ModelPackage,
    served: ModelPackage,
    heads: dict[str, packaging.HeadSpec],
    check_texts: list[str],
    recipe: str | None,
) -> dict[str, float]:
    """Per task, the int8 graph's agreement with fp32 at the calibrated thresholds (1.0 when not
    quantised); ``QuantizationError`` below ``min_int8_agreement``."""
    if recipe is None:
        return dict.fromkeys(job.space.tasks, 1.0)
    thresholds = {t: float(h.threshold or 0.5) for t, h in heads.items() if h.kind == "binary"}
    agreement = export.int8_agreement(fp32, served, check_texts, thresholds)
    if min(agreement.values()) < job.cfg.min_int8_agreement:
        # The trained model is kept (work/, checkpoints/): `--resume` with other export settings
        # publishes again without training again.
        raise export.QuantizationError(
            f"int8 agrees with fp32 on {agreement} < {job.cfg.min_int8_agreement}"
        )
    return agreement


def _metrics(
    job: _Job,
    heads: dict[str, packaging.HeadSpec],
    scorer: Scorer,
    val_scores: Scores,
    train_summary: dict[str, Any],
) -> dict[str, Any]:
    """The manifest's ``metrics``: val (with the sweep's objective) and test figures of the served
    decisions, and the training summary's numbers; val and test are logged to W&B."""
    task_heads = {t: TaskHead.from_manifest(t, h.manifest(t)) for t, h in heads.items()}
    val_metrics = evaluate(task_heads, val_scores, job.val_df)
    val_metrics["objective"] = objective(val_metrics, job.cfg.vulnerable_beta)
    metrics = {
        "val": val_metrics,
        "test": evaluate(task_heads, scorer.score(list(job.test_df["text"])), job.test_df),
        "train": {k: v for k, v in train_summary.items() if isinstance(v, int | float)},
    }
    job.tracker.log(
        {
            f"{split}/{task}/{k}": v
            for split in ("val", "test")
            for task, m in metrics[split].items()
            if isinstance(m, dict)
            for k, v in m.items()
        }
        | {"val/objective": val_metrics["objective"]}
    )
    return metrics


def _lineage(job: _Job, train_summary: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``lineage`` (``packaging.write_package`` adds the code commit)."""
    lineage: dict[str, Any] = {
        "dataset_digest": job.digest,
        "wandb_run": job.tracker.ref,
        "base_model": model.describe(job.base),
        "label_maps_version": job.space.version,
        "data": list(job.cfg.data),
        "seed": job.cfg.seed,
    }
    if train_summary.get("mlm"):
        lineage["adaptation"] = _adaptation(train_summary["mlm"])
    if train_summary.get("lexical"):
        lineage["lexical"] = train_summary["lexical"]
    return lineage


def _adaptation(adaptation: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records of a masked-LM adaptation: enough to redo it."""
    keep = ("corpus_digest", "sources", "texts", "epochs", "probability", "steps", "final_loss")
    return {"method": "masked-lm", **{k: adaptation[k] for k in keep}}


def _description(job: _Job, train_summary: dict[str, Any]) -> str:
    """The manifest's one-line description of what was trained."""
    return (
        Path(job.base).name
        + (" + masked-LM adaptation" if train_summary.get("mlm") else "")
        + f" + {len(job.space.tasks)} linear heads, fine-tuned by {__name__}"
        + (
            f", mixed with a TF-IDF model at weight {job.cfg.lexical_weight}"
            if train_summary.get("lexical")
            else ""
        )
    )


def calibrate_heads(
    space: LabelSpace, val_df: pd.DataFrame, scores: Scores, cfg: TrainConfig
) -> dict[str, packaging.HeadSpec]:
    """Each task's head with its thresholds chosen on the validation rows labelled for it: the
    multiclass heads automate the share whose accuracy reaches ``review_target_accuracy`` at
    ``guarantee_confidence`` (``trainer.selective``); ``vulnerable`` flags by
    ``cfg.vulnerable_policy`` (``guarantee``: recall >= ``vulnerable_min_recall`` at that
    confidence)."""
    heads = {}
    for task, labels in space.tasks.items():
        y = indices(val_df[task], labels)
        known = y != IGNORE  # calibrate each task on the validation rows labelled for it
        if not known.any():
            raise DataError(
                f"no validation rows labelled for {task!r}: cannot calibrate its thresholds"
            )
        y, probs = y[known], scores.probs[task][known]
        if task == "vulnerable":
            heads[task] = _vulnerable_head(labels, probs[:, 1], y == 1, cfg)
            continue
        target = cfg.review_target_accuracy.get(task)
        if target is None:
            raise DataError(
                f"no review_target_accuracy for {task!r}: name the accuracy its automated share "
                "must reach (e.g. --review_target_accuracy '{\"%s\": 0.8}')" % task
            )
        g = selective.accuracy_threshold(
            probs.max(axis=1),
            probs.argmax(axis=1) == y,
            target,
            cfg.guarantee_confidence,
            cfg.guarantee_min_coverage,
        )
        heads[task] = packaging.HeadSpec(
            labels, review_threshold=g["threshold"], top_k=cfg.top_k, guarantee=g
        )
    return heads


def _vulnerable_head(
    labels: tuple[str, ...], p_yes: np.ndarray, positive: np.ndarray, cfg: TrainConfig
) -> packaging.HeadSpec:
    if cfg.vulnerable_policy == "guarantee":
        g = selective.recall_threshold(
            p_yes, positive, cfg.vulnerable_min_recall, cfg.guarantee_confidence
        )
        return packaging.HeadSpec(
            labels, "binary", threshold=g["threshold"], positive_label="yes", guarantee=g
        )
    cal = calibrate.binary_threshold(
        p_yes,
        positive,
        cfg.vulnerable_policy,
        cfg.vulnerable_beta,
        cfg.vulnerable_min_precision,
        cfg.vulnerable_min_recall,
    )
    return packaging.HeadSpec(
        labels, "binary", threshold=cal["threshold"], positive_label="yes", calibration=cal
    )
