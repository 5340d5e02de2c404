"""Assemble a model package folder and its manifest (schema ``model-manifest/v1``, see
consumer.package).

The folder holds ``model.onnx`` (served, int8 unless quantisation is off), ``model.fp32.onnx``
(parity audits), ``tokenizer.json`` (truncation at ``max_length``, no padding) and
``manifest.json``, written last by ``consumer.package.write_manifest``, which hashes every file and
validates the document.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumer.package import ModelPackage, write_manifest
from trainer.export import FP32_FILE, INPUTS, INT8_FILE, ExportReport
from trainer.model import output_name
from trainer.tokens import serving_tokenizer

TOKENIZER_FILE = "tokenizer.json"


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


def write_tokenizer(source: Path, folder: Path, max_length: int) -> Path:
    """Copy a tokenizer.json with the serving policy baked in (truncate at max_length, no fixed
    padding)."""
    dest = folder / TOKENIZER_FILE
    serving_tokenizer(source, max_length).save(str(dest))
    return dest


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
        "tokenizer": {"file": TOKENIZER_FILE, "max_length": max_length, "truncation": truncation},
        "tasks": {task: spec.manifest(task) for task, spec in heads.items()},
        "metrics": metrics,
        "lineage": {"code_commit": code_commit(), **lineage},
    }
    return write_manifest(folder, manifest)
