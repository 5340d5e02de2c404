"""Pinned command-line tools the chart tests use (built by scripts/install-tools.sh into a cache
dir)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def tool(name: str) -> str | None:
    """``name`` on PATH, else in the tools cache, else None (the tests then skip, naming the install
    script)."""
    cached = (
        Path(os.environ.get("TOOLS_BIN", Path.home() / ".cache/complaints-allocation/bin")) / name
    )
    return shutil.which(name) or (str(cached) if cached.exists() else None)
