"""Assemble a model package folder and its manifest (schema ``model-manifest/v1``, see
consumer.package).

The folder holds ``model.onnx`` (served, int8 unless quantisation is off), ``model.fp32.onnx``
(parity audits), ``tokenizer.json`` (truncation at ``max_length``, no padding) and
``manifest.json``, written last by ``consumer.package.write_manifest``, which hashes every file and
validates the document.

Until then the package is read through a *draft* (``draft``): a ``ModelPackage`` built in memory
with just the manifest fields that ``consumer.inference`` reads (graph file, tokenizer, read length,
long-text policy, heads). Training tokenises, and every check and calibration scores, through the
consumer's own code on it. The real manifest cannot come first: it records thresholds calibrated on
those scores, and a manifest on disk would make a half-built folder look like a package.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from consumer.package import ModelPackage, file_sha256, write_manifest
from trainer.export import FP32_FILE, INPUTS, INT8_FILE, ExportReport
from trainer.model import output_name

TOKENIZER_FILE = "tokenizer.json"
# The manifest schema's long-text policies; consumer.inference reads any other as ``head``.
TRUNCATIONS = ("head", "head_tail")


@dataclass
class HeadSpec:
    """Decision settings of one head, as calibrated on validation."""

    labels: tuple[str, ...]
    kind: str = "multiclass"
    threshold: float | None = None
    review_threshold: float | None = None
    top_k: int = 3
    positive_label: str | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    # trainer.selective's record: the threshold's finite-sample guarantee, read by the consumer
    guarantee: dict[str, Any] = field(default_factory=dict)

    def manifest(self, task: str) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "output": output_name(task),
            "labels": list(self.labels),
            "kind": self.kind,
        }
        if self.kind == "binary":
            spec["positive_label"] = self.positive_label
            spec["threshold"] = 0.5 if self.threshold is None else round(float(self.threshold), 6)
        else:
            spec["review_threshold"] = round(float(self.review_threshold or 0.0), 6)
            spec["top_k"] = min(self.top_k, len(self.labels))
        if self.calibration:
            spec["calibration"] = self.calibration
        if self.guarantee:
            spec["guarantee"] = self.guarantee
        return spec


def default_heads(tasks: dict[str, tuple[str, ...]]) -> dict[str, HeadSpec]:
    """Uncalibrated heads: binary tasks flag at 0.5 on their last label (``yes``), multiclass never
    review."""
    heads = {}
    for task, labels in tasks.items():
        if len(labels) == 2 and labels[-1] == "yes":
            heads[task] = HeadSpec(labels, "binary", threshold=0.5, positive_label="yes")
        else:
            heads[task] = HeadSpec(labels, review_threshold=0.0)
    return heads


def code_commit() -> str:
    """The git commit of this checkout, ``<sha>-dirty`` when ``trainer/`` differs from it
    (uncommitted or untracked files). Without a checkout (an installed package, an image),
    ``ALLOCATOR_CODE_COMMIT``, which the images set from their build (docker/*.Dockerfile), else
    ``unknown``."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=5, check=False, cwd=here
            )
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD") if (here.parent / ".git").exists() else None
    if not sha:
        return os.environ.get("ALLOCATOR_CODE_COMMIT") or "unknown"
    return f"{sha}-dirty" if git("status", "--porcelain", "--", str(here)) else sha


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


def write_tokenizer(source: Path, folder: Path, max_length: int) -> Path:
    """Copy a tokenizer.json into ``folder`` with the serving policy baked in: truncation at
    ``max_length``, no padding (fixed padding costs 2-4x on CPU, DESIGN section 5). The consumer
    turns both off when it loads the file and applies the manifest's long-text policy itself."""
    tok = Tokenizer.from_file(str(source))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    dest = folder / TOKENIZER_FILE
    tok.save(str(dest))
    return dest


def draft(
    folder: Path,
    tasks: dict[str, tuple[str, ...]],
    *,
    max_length: int,
    truncation: str,
    name: str,
    version: str,
    graph: str = INT8_FILE,
) -> ModelPackage:
    """The package being built in ``folder``, as ``consumer.inference`` reads it: ``graph`` (the
    served one by default, or ``FP32_FILE``), ``folder/tokenizer.json`` read up to ``max_length``
    ids under ``truncation``, and one uncalibrated head per task of ``tasks`` (task -> labels).

    Nothing is verified or written: the tokenizer must exist (its digest keys the consumer's
    encoder), the graph only by the time it is scored. A truncation the manifest schema does not
    know is refused now (``ValueError``), before any training, rather than by ``write_manifest`` at
    the end."""
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, not {truncation!r}")
    manifest = {
        "name": name,
        "version": version,
        "onnx": {"file": graph},
        "tokenizer": _tokenizer_doc(max_length, truncation),
        "tasks": {task: spec.manifest(task) for task, spec in default_heads(tasks).items()},
        "files": {TOKENIZER_FILE: file_sha256(folder / TOKENIZER_FILE)},
    }
    return ModelPackage(path=folder, manifest=manifest, digest="")


def draft_graphs(
    folder: Path,
    tasks: dict[str, tuple[str, ...]],
    *,
    max_length: int,
    truncation: str,
    name: str,
    version: str,
) -> tuple[ModelPackage, ModelPackage]:
    """``(fp32, served)``: the ``draft`` once with each graph file, ``FP32_FILE`` and ``INT8_FILE``,
    as ``export.export_all`` writes and checks them."""
    fp32, served = (
        draft(
            folder,
            tasks,
            max_length=max_length,
            truncation=truncation,
            name=name,
            version=version,
            graph=graph,
        )
        for graph in (FP32_FILE, INT8_FILE)
    )
    return fp32, served


def _tokenizer_doc(max_length: int, truncation: str) -> dict[str, Any]:
    """The manifest's ``tokenizer`` entry: the file, how many ids the graph reads, the policy."""
    return {"file": TOKENIZER_FILE, "max_length": max_length, "truncation": truncation}


def write_package(
    folder: Path,
    *,
    name: str,
    version: str,
    heads: dict[str, HeadSpec],
    report: ExportReport,
    max_length: int,
    truncation: str,
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    description: str = "",
    quantized: bool = True,
    created_at: str | None = None,
) -> ModelPackage:
    """Write ``manifest.json`` for a folder that already holds the ONNX graphs and tokenizer.

    ``created_at`` defaults to now; a fixed value makes the package digest reproducible (``tiny``).
    """
    onnx_doc: dict[str, Any] = {
        "file": INT8_FILE,
        "opset": report.opset,
        "quantization": "int8-dynamic" if quantized else "none",
        "inputs": list(INPUTS),
        "parity": {
            "max_abs_diff": float(report.max_abs_diff),
            "tolerance": float(report.tolerance),
            "int8_label_agreement": float(report.int8_label_agreement),
            "int8_agreement_per_task": report.int8_agreement_per_task,
            "int8_recipe": report.int8_recipe,
        },
    }
    if quantized:
        onnx_doc["fp32_file"] = FP32_FILE
    manifest = {
        "name": name,
        "version": version,
        "created_at": created_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "description": description,
        "onnx": onnx_doc,
        "tokenizer": _tokenizer_doc(max_length, truncation),
        "tasks": {task: spec.manifest(task) for task, spec in heads.items()},
        "metrics": metrics,
        "lineage": {"code_commit": code_commit(), **lineage},
    }
    return write_manifest(folder, manifest)
