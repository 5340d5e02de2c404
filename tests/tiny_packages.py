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
