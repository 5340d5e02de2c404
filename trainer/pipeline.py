"""``python -m trainer train``: data -> fine-tune -> export + parity -> int8 -> calibrate ->
package -> W&B.

Order matters for honesty: thresholds are calibrated on validation scores of the *served* (int8)
graph, so they apply to the numbers the consumer sees; test figures come from the same graph after
calibration; the holdout is never trained, tuned or scored here (``splits.training_rows`` refuses
it); its texts are read only to keep copies of them out of training (``splits.guard_holdout``, the
masked-LM corpus). Outputs under ``out``: ``package/`` (the model package), ``checkpoints/``,
``work/`` (the fine-tuned PyTorch model) and ``train_report.json``.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from consumer.package import ModelPackage, TaskHead
from trainer import calibrate, export, lexical, model, packaging, pretrain, splits
from trainer.data import load_source, load_texts
from trainer.errors import DataError
from trainer.finetune import FineTune
from trainer.labels import IGNORE, LabelSpace, indices, load_label_space
from trainer.metrics import evaluate, objective
from trainer.run_config import TrainConfig
from trainer.scoring import OnnxScorer, Scores
from trainer.tokens import TextEncoder, serving_tokenizer, special_ids
from trainer.tracking import Tracker
from trainer.train import Encoded

log = logging.getLogger(__name__)


def load_rows(
    cfg: TrainConfig, space: LabelSpace
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """All sources combined and split: ``(rows, every_row, summary)``. ``rows`` are the ones the
    run uses: with ``limit_rows``, a reproducible sample of each split; ``every_row`` is all of them
    (the masked-LM stage keeps clear of every evaluation text, sampled or not)."""
    frames, reports = [], []
    for src in cfg.data:
        df, rep = load_source(src, space)
        frames.append(df)
        reports.append(rep.summary())
    every_row = rows = splits.prepare(frames)
    if cfg.limit_rows:
        rows = pd.concat(
            [
                g.sample(n=min(len(g), cfg.limit_rows), random_state=cfg.seed)
                for _, g in rows.groupby("split")
            ],
            ignore_index=True,
        )
    counts = rows["split"].value_counts().to_dict()
    return rows, every_row, {"sources": reports, "split_rows": counts, "rows": len(rows)}


def encode(df: pd.DataFrame, enc: TextEncoder, space: LabelSpace) -> Encoded:
    labels = {task: indices(df[task], names) for task, names in space.tasks.items()}
    return Encoded(ids=enc.encode(list(df["text"])), labels=labels)


def base_tokenizer(base: str, work: Path) -> Path:
    """The base model's ``tokenizer.json``: from its folder, else saved from its fast tokenizer (hub
    ids)."""
    local = Path(base) / "tokenizer.json"
    if local.is_file():
        return local
    from transformers import AutoTokenizer

    work.mkdir(parents=True, exist_ok=True)
    dest = work / "base.tokenizer.json"
    AutoTokenizer.from_pretrained(base, use_fast=True).backend_tokenizer.save(str(dest))
    return dest


def adapt_encoder(
    cfg: TrainConfig,
    base: str,
    rows: pd.DataFrame,
    train_df: pd.DataFrame,
    enc: TextEncoder,
    out: Path,
    resume: bool,
    tracker: Tracker,
) -> tuple[str, dict[str, Any]]:
    """Masked-LM adaptation of ``base`` on the training texts plus ``cfg.mlm_data``, never on a text
    of val, test or holdout (``rows`` holds them all). Returns the adapted encoder's folder and the
    summary."""
    extra = [t for src in cfg.mlm_data for t in load_texts(src)]
    texts = pretrain.corpus(train_df["text"], extra, rows.loc[rows["split"] != "train", "text"])
    mask_id = enc.tok.token_to_id("[MASK]")
    if mask_id is None:
        raise DataError(
            f"{base}: the tokenizer has no [MASK] token, so it cannot be adapted with masked LM"
        )
    data = Encoded(ids=enc.encode(texts.texts), labels={})
    folder, summary = pretrain.adapt(
        base,
        data,
        cfg,
        out / "checkpoints-mlm",
        digest=texts.digest,
        pad_id=enc.pad_id,
        mask_id=mask_id,
        special_ids=special_ids(enc.tok),
        resume=resume,
        on_log=lambda metrics, step: tracker.log(metrics, step=step),
    )
    summary = {
        **summary,
        "sources": list(cfg.mlm_data),
        "excluded_evaluation_texts": texts.excluded,
    }
    tracker.log({"mlm/final_loss": summary["final_loss"], "mlm/texts": summary["texts"]})
    return str(folder), summary


def run(cfg: TrainConfig, out: Path, *, resume: bool = False) -> ModelPackage:
    started = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    space = load_label_space()
    rows, every_row, data_summary = load_rows(cfg, space)
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
    try:
        tracker.log_dataset(digest, list(cfg.data), data_summary)
        pkg_dir = out / "package"
        pkg_dir.mkdir(parents=True, exist_ok=True)
        tok_path = packaging.write_tokenizer(
            base_tokenizer(base, out / "work"), pkg_dir, cfg.serving_length
        )
        enc = TextEncoder(
            serving_tokenizer(tok_path, cfg.max_length), cfg.max_length, cfg.truncation
        )
        train_enc, val_enc = encode(train_df, enc, space), encode(val_df, enc, space)
        t0 = time.perf_counter()
        tune_base, adaptation = base, None
        if cfg.mlm_epochs:
            tune_base, adaptation = adapt_encoder(
                cfg, base, every_row, train_df, enc, out, resume, tracker
            )
        # W&B steps only grow: the fine-tune's are counted on from the masked-LM stage's
        offset = adaptation["steps"] if adaptation else 0
        tune = FineTune(
            tune_base, space, train_enc, val_enc, enc.pad_id, digest, tracker, resume, offset
        )
        net, summary = tune.run(cfg, out / "checkpoints")
        summary["mlm"] = adaptation
        if cfg.soup_seeds:
            net, summary = tune.soup(cfg, net, summary, out)
        summary["train_seconds"] = time.perf_counter() - t0
        net.save(out / "work")
        served: export.Servable = net
        serve_enc = enc
        if cfg.lexical_weight:
            served, serve_enc, summary["lexical"] = wide_and_deep(
                cfg, net, tok_path, train_df, train_enc.labels
            )
            tracker.log(
                {f"lexical/{k}": summary["lexical"][k] for k in ("seconds", "features_used")}
            )
        package = publish(
            served,
            cfg,
            space,
            serve_enc,
            pkg_dir,
            val_df,
            test_df,
            version,
            base,
            digest,
            tracker,
            summary,
        )
        report = {
            "package": str(pkg_dir),
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
        tracker.summary({"wall_seconds": report["wall_seconds"], "package_digest": package.digest})
        return package
    finally:
        tracker.finish()


def wide_and_deep(
    cfg: TrainConfig,
    net: model.MultiTaskModel,
    tok_path: Path,
    train_df: pd.DataFrame,
    labels: dict[str, np.ndarray],
) -> tuple[lexical.WideAndDeep, TextEncoder, dict[str, Any]]:
    """Fit the lexical model on the training rows (``labels``: their label indices per task) as the
    package's tokenizer reads them, and mix it with the fine-tuned ``net``. Returns the module to
    export, the encoder that feeds it, and the lexical summary."""
    t0 = time.perf_counter()
    read = TextEncoder(
        serving_tokenizer(tok_path, cfg.lexical_read_length), cfg.lexical_read_length, "head"
    )
    vocab, special = read.tok.get_vocab_size(), special_ids(read.tok)
    counts = lexical.count(read.encode(list(train_df["text"])), vocab, cfg.lexical_buckets, special)
    features = lexical.Features.fit(counts, vocab, cfg.lexical_buckets, special)
    wide = lexical.LexicalHead(
        features, lexical.fit_wide(features, counts, labels, net.tasks, cfg.lexical_c)
    )
    end_id = read.tok.token_to_id("[SEP]")
    if end_id is None:
        raise DataError(
            "the tokenizer has no [SEP] token: the graph cannot re-cut the encoder's input"
        )
    served = lexical.WideAndDeep(net.eval(), wide, cfg.lexical_weight, cfg.max_length, end_id)
    summary = {
        "method": "tfidf-logistic-regression",
        "weight": cfg.lexical_weight,
        "read_length": cfg.lexical_read_length,
        "encoder_length": cfg.max_length,
        "buckets": cfg.lexical_buckets,
        "c": cfg.lexical_c,
        "features_used": int((features.idf > 0).sum()),
        "seconds": time.perf_counter() - t0,
    }
    log.info("lexical model fitted on %d rows in %.0f s", counts.shape[0], summary["seconds"])
    return served, read, summary


def publish(
    net: export.Servable,
    cfg: TrainConfig,
    space: LabelSpace,
    enc: TextEncoder,
    pkg_dir: Path,
    val_df: pd.DataFrame,
    test_df: pd.DataFrame,
    version: str,
    base: str,
    digest: str,
    tracker: Tracker,
    train_summary: dict[str, Any],
) -> ModelPackage:
    """Export, check, calibrate on validation, evaluate on test, write and log the package."""
    check_texts = list(val_df["text"][: cfg.check_rows])
    fp32 = pkg_dir / export.FP32_FILE
    served = pkg_dir / export.INT8_FILE
    export.export_fp32(net, fp32)
    max_diff = export.check_parity(net, fp32, enc, check_texts, cfg.parity_tolerance)
    outputs = {t: model.output_name(t) for t in space.tasks}
    recipe = export.quantize_int8(fp32, served) if cfg.quantize else None
    if recipe is None:
        fp32.replace(served)
    scorer = OnnxScorer(
        served,
        pkg_dir / packaging.TOKENIZER_FILE,
        enc.max_length,
        enc.truncation,
        outputs,
        threads=cfg.threads,
    )
    # Thresholds are calibrated on the graph that will be served, so they mean what the consumer
    # sees.
    val_scores = scorer.score(list(val_df["text"]))
    heads = calibrate_heads(space, val_df, val_scores, cfg)
    if recipe is None:
        agreement = dict.fromkeys(space.tasks, 1.0)
    else:
        thresholds = {
            t: (1, float(h.threshold or 0.5)) for t, h in heads.items() if h.kind == "binary"
        }
        agreement = export.int8_agreement(
            fp32, served, enc, check_texts, list(space.tasks), thresholds
        )
        if min(agreement.values()) < cfg.min_int8_agreement:
            # The trained model is kept (work/, checkpoints/): `--resume` with other export settings
            # publishes again without training again.
            raise export.QuantizationError(
                f"int8 agrees with fp32 on {agreement} < {cfg.min_int8_agreement}"
            )
    report = export.ExportReport(
        export.OPSET, max_diff, cfg.parity_tolerance, min(agreement.values()), agreement, recipe
    )
    task_heads = {t: TaskHead.from_manifest(t, h.manifest(t)) for t, h in heads.items()}
    val_metrics = evaluate(task_heads, val_scores, val_df)
    val_metrics["objective"] = objective(val_metrics, cfg.vulnerable_beta)
    metrics = {
        "val": val_metrics,
        "test": evaluate(task_heads, scorer.score(list(test_df["text"])), test_df),
        "train": {k: v for k, v in train_summary.items() if isinstance(v, int | float)},
    }
    tracker.log(
        {
            f"{split}/{task}/{k}": v
            for split in ("val", "test")
            for task, m in metrics[split].items()
            if isinstance(m, dict)
            for k, v in m.items()
        }
        | {"val/objective": val_metrics["objective"]}
    )
    package = packaging.write_package(
        pkg_dir,
        name=cfg.name,
        version=version,
        heads=heads,
        report=report,
        max_length=enc.max_length,
        truncation=enc.truncation,
        metrics=metrics,
        quantized=cfg.quantize,
        lineage={
            "dataset_digest": digest,
            "wandb_run": tracker.ref,
            "base_model": model.describe(base),
            "label_maps_version": space.version,
            "data": list(cfg.data),
            "seed": cfg.seed,
            **({"adaptation": _lineage(train_summary["mlm"])} if train_summary.get("mlm") else {}),
            **(
                {"lexical": lexical_facts}
                if (lexical_facts := train_summary.get("lexical"))
                else {}
            ),
        },
        description=Path(base).name
        + (" + masked-LM adaptation" if train_summary.get("mlm") else "")
        + f" + {len(space.tasks)} linear heads, fine-tuned by trainer.pipeline"
        + (f", mixed with a TF-IDF model at weight {cfg.lexical_weight}" if lexical_facts else ""),
    )
    tracker.log_package(pkg_dir, package.manifest, cfg.registry_collection)
    return package


def _lineage(adaptation: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records of a masked-LM adaptation: enough to redo it."""
    keep = ("corpus_digest", "sources", "texts", "epochs", "probability", "steps", "final_loss")
    return {"method": "masked-lm", **{k: adaptation[k] for k in keep}}


def calibrate_heads(
    space: LabelSpace, val_df: pd.DataFrame, scores: Scores, cfg: TrainConfig
) -> dict[str, packaging.HeadSpec]:
    heads = {}
    for task, labels in space.tasks.items():
        y = indices(val_df[task], labels)
        known = y != IGNORE  # calibrate each task on the validation rows labelled for it
        if not known.any():
            raise DataError(
                f"no validation rows labelled for {task!r}: cannot calibrate its thresholds"
            )
        y, probs = y[known], scores.probs(task)[known]
        if task == "vulnerable":
            cal = calibrate.binary_threshold(
                probs[:, 1],
                y == 1,
                cfg.vulnerable_policy,
                cfg.vulnerable_beta,
                cfg.vulnerable_min_precision,
                cfg.vulnerable_min_recall,
            )
            heads[task] = packaging.HeadSpec(
                labels, "binary", threshold=cal["threshold"], positive_label="yes", calibration=cal
            )
        else:
            cal = calibrate.review_threshold(probs, y, cfg.review_target_accuracy.get(task, 0.9))
            heads[task] = packaging.HeadSpec(
                labels, review_threshold=cal["review_threshold"], top_k=cfg.top_k, calibration=cal
            )
    return heads
