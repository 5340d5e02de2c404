"""Tiny model packages for tests, built once per session per seed (``python -m trainer tiny``)."""

from __future__ import annotations

import shutil
from pathlib import Path

_BUILT: dict[int, Path] = {}


def tiny_package(root: Path, seed: int = 0) -> Path:
    """A verified tiny package folder for ``seed``; later calls copy the first build (8 s saved
    each)."""
    if seed not in _BUILT:
        from trainer.tiny import build_tiny

        out = root / f"tiny-s{seed}"
        build_tiny(out, seed)
        _BUILT[seed] = out
    return _BUILT[seed]


def copy_package(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def with_validation_figures(
    src: Path, dst: Path, accuracy: float = 0.5, recall: float = 0.5
) -> Path:
    """A copy of package ``src`` whose manifest records validation figures and a met guarantee
    (``trainer.selective``'s record, at the same figures) for every head, as a trained one does
    (made up: the weights are random). Same name and version, another digest."""
    from consumer.package import load_package, write_manifest
    from trainer.selective import METHOD

    manifest = load_package(copy_package(src, dst)).manifest
    val, tasks = {}, {}
    for task, head in manifest["tasks"].items():
        binary = head["kind"] == "binary"
        val[task] = {"accuracy": accuracy, **({"recall": recall} if binary else {})}
        measure = "recall" if binary else "accuracy_on_automated"
        guarantee = {
            "method": METHOD,
            "measure": measure,
            "target": recall if binary else accuracy,
            "confidence": 0.95,
            "met": True,
        }
        tasks[task] = {**head, "guarantee": guarantee}
    write_manifest(dst, {**manifest, "tasks": tasks, "metrics": {"val": val}})
    return dst


def with_failing_graph(src: Path, dst: Path) -> Path:
    """A copy of package ``src`` that verifies but fails at run time on every batch, version
    ``<version>-broken`` (``trainer.tiny.failing_copy``, which the demo's bad release uses too)."""
    from trainer.tiny import failing_copy

    return failing_copy(src, dst)
