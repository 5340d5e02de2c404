"""Pieces of ``scripts/stack.sh`` that can be checked without starting a server."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stack.sh"


def test_a_cluster_id_never_starts_with_a_dash(tmp_path: Path) -> None:
    """Base64url of 16 random bytes starts with "-" once in 64 draws, and the storage tool's
    argument parser then takes ``-t -xyz`` for two options. The first draw here is such an id: the
    function must draw again."""
    first, second = uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(int=12345)
    (tmp_path / "sitecustomize.py").write_text(
        "import uuid\n"
        f"_draws = iter([uuid.UUID({str(first)!r}), uuid.UUID({str(second)!r})])\n"
        "uuid.uuid4 = lambda: next(_draws)\n"
    )
    function = re.search(r"^cluster_id\(\) \{\n.*?^\}\n", SCRIPT.read_text(), re.S | re.M)
    assert function, "scripts/stack.sh has no cluster_id function"
    out = subprocess.run(
        ["bash", "-c", function.group(0) + "cluster_id"],
        env={"PYTHON": sys.executable, "PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "AAAAAAAAAAAAAAAAAAAwOQ"  # the second draw, 16 bytes base64url without padding
    assert not out.startswith("-") and len(out) == 22
