"""Model packages (DESIGN section 3): a folder with ``model.onnx``, ``tokenizer.json`` and
``manifest.json``.

The manifest lists the sha256 of every other file; the *package digest* is the sha256 of the
manifest bytes, so it pins every file. Loading verifies every digest and refuses a package that
differs by one byte. A model is a set of task heads: adding a task means publishing a package whose
manifest has that head.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from consumer.contracts import schemas
from consumer.errors import IntegrityError, PackageError

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class TaskHead:
    """One classification head of a model: an ONNX logits output and how to turn it into a
    decision."""

    task: str
    output: str
    labels: tuple[str, ...]
    kind: Literal["multiclass", "binary"]
    positive_label: str | None = None
    threshold: float = 0.5
    review_threshold: float = 0.0
    top_k: int = 3
    # the manifest's ``guarantee.met``: False automates nothing; None (no guarantee recorded, a
    # package made before 2026-12-06) automates at ``review_threshold`` as it always did
    guarantee_met: bool | None = None

    def automates(self, top_score: Any) -> Any:
        """Whether a multiclass head decides alone at this top score (a float, or an array of them:
        the benches and ``trainer compare`` count with the rule the consumer routes by). Never when
        its guarantee is unmet."""
        return (top_score >= self.review_threshold) & (self.guarantee_met is not False)

    @classmethod
    def from_manifest(cls, task: str, spec: dict[str, Any]) -> TaskHead:
        head = cls(
            task=task,
            output=spec["output"],
            labels=tuple(spec["labels"]),
            kind=spec["kind"],
            positive_label=spec.get("positive_label"),
            threshold=float(spec.get("threshold", 0.5)),
            review_threshold=float(spec.get("review_threshold", 0.0)),
            top_k=int(spec.get("top_k", 3)),
            guarantee_met=_met(spec.get("guarantee")),
        )
        if head.kind == "binary" and head.positive_label not in head.labels:
            raise PackageError(
                f"task {task!r}: binary head needs positive_label among its labels {head.labels}",
                "bad_manifest",
            )
        return head


@dataclass(frozen=True)
class ModelPackage:
    """A verified model package on local disk."""

    path: Path
    manifest: dict[str, Any]
    digest: str

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest["onnx"]["file"]

    @property
    def tokenizer_path(self) -> Path:
        return self.path / self.manifest["tokenizer"]["file"]

    @property
    def max_length(self) -> int:
        return int(self.manifest["tokenizer"]["max_length"])

    @property
    def truncation(self) -> str:
        return str(self.manifest["tokenizer"]["truncation"])

    @property
    def heads(self) -> dict[str, TaskHead]:
        return {t: TaskHead.from_manifest(t, spec) for t, spec in self.manifest["tasks"].items()}

    @property
    def tokenizer_digest(self) -> str:
        """Packages with the same tokenizer digest and max length can share one tokenisation."""
        return str(self.manifest["files"][self.manifest["tokenizer"]["file"]])

    def expected(self, task: str) -> dict[str, float]:
        """What the ``task`` head achieved on validation, by measure, as the trainer recorded it:
        ``accuracy`` (``metrics.val.<task>.accuracy``) and, for a binary head, ``recall`` of its
        positive label at the calibrated threshold (``tasks.<task>.guarantee.val_recall``, else
        ``tasks.<task>.calibration.val_recall``, else ``metrics.val.<task>.recall``); and when the
        head's guarantee is met, its target: ``guaranteed_accuracy`` (multiclass: accuracy on the
        automated share) or ``guaranteed_recall`` (binary). A figure the manifest lacks, or that is
        not a ratio, is left out: the live-quality alerts have nothing to compare with for it."""
        spec = self.manifest["tasks"].get(task) or {}
        val = ("metrics", "val", task)
        found = {"accuracy": _ratio(self.manifest, *val, "accuracy")}
        if spec.get("kind") == "binary":
            calibrated = _ratio(spec, "guarantee", "val_recall")
            if calibrated is None:
                calibrated = _ratio(spec, "calibration", "val_recall")
            found["recall"] = (
                calibrated if calibrated is not None else _ratio(self.manifest, *val, "recall")
            )
        guarantee = spec.get("guarantee")
        if isinstance(guarantee, dict) and guarantee.get("met") is True:
            measure = "guaranteed_recall" if spec.get("kind") == "binary" else "guaranteed_accuracy"
            found[measure] = _ratio(guarantee, "target")
        return {measure: v for measure, v in found.items() if v is not None}


def _met(guarantee: Any) -> bool | None:
    return bool(guarantee.get("met")) if isinstance(guarantee, dict) else None


def _ratio(doc: Any, *path: str) -> float | None:
    """``doc[path[0]][path[1]]...`` when that is a number in [0, 1]; None otherwise."""
    for key in path:
        doc = doc.get(key) if isinstance(doc, dict) else None
    if isinstance(doc, bool) or not isinstance(doc, int | float) or not 0 <= doc <= 1:
        return None
    return float(doc)


def read_manifest(folder: Path) -> tuple[dict[str, Any], str]:
    """Parse and schema-check ``folder/manifest.json``; return it with its digest (no file
    checks)."""
    path = Path(folder) / MANIFEST
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PackageError(
            f"{folder}: no readable {MANIFEST} ({exc.strerror})", "missing_file"
        ) from exc
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise PackageError(f"{path}: not JSON ({exc})", "bad_manifest") from exc
    problems = schemas.errors("model-manifest/v1", manifest)
    if problems:
        raise PackageError(f"{path}: invalid manifest: " + "; ".join(problems[:5]), "bad_manifest")
    return manifest, hashlib.sha256(raw).hexdigest()


def load_package(folder: Path | str, expected_digest: str | None = None) -> ModelPackage:
    """Verify every file of the package against its manifest (and the manifest against
    ``expected_digest``).

    Raises ``IntegrityError`` naming the file and both digests on any mismatch, ``PackageError``
    when the package is incomplete or its manifest is invalid.
    """
    folder = Path(folder)
    manifest, digest = read_manifest(folder)
    if expected_digest is not None and digest != expected_digest:
        raise IntegrityError(
            f"{folder / MANIFEST}: sha256 {digest} differs from the registered package digest "
            f"{expected_digest}"
        )
    files: dict[str, str] = manifest["files"]
    for needed in (manifest["onnx"]["file"], manifest["tokenizer"]["file"]):
        if needed not in files:
            raise PackageError(
                f"{folder}: {needed} is not listed in the manifest's files", "bad_manifest"
            )
    for rel, want in sorted(files.items()):
        path = folder / rel
        if not path.is_file():
            raise PackageError(
                f"{folder}: file {rel} listed in the manifest is missing", "missing_file"
            )
        got = file_sha256(path)
        if got != want:
            raise IntegrityError(f"{path}: sha256 {got} differs from the manifest's {want}")
    package = ModelPackage(path=folder, manifest=manifest, digest=digest)
    package.heads  # noqa: B018 - validates every head now rather than at first use
    return package


def write_manifest(folder: Path | str, manifest: dict[str, Any]) -> ModelPackage:
    """Fill ``files`` with the sha256 of every file in ``folder`` and write ``manifest.json``.

    Used by the trainer when it publishes a package; returns the verified package.
    """
    folder = Path(folder)
    files = {
        str(p.relative_to(folder)): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    doc = {**manifest, "schema": "model-manifest/v1", "files": files}
    problems = schemas.errors("model-manifest/v1", doc)
    if problems:
        raise PackageError("refusing to write an invalid manifest: " + "; ".join(problems[:5]))
    (folder / MANIFEST).write_text(
        json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return load_package(folder)
