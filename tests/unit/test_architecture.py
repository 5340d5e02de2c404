"""The dependency rule of DESIGN.md, enforced: processes import the core, never the reverse.

``consumer`` (the runtime core) imports no process package; each process (``promoter``,
``explainer``, ``trainer``) imports the core and itself, never a sibling; only ``allocator`` (the
composition root of the console command) imports them all. And the consumer's runtime stays free of
torch and shap: ``allocator consume`` must run in the image that has neither.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("promoter", "explainer", "trainer")
TOP_LEVEL = ("allocator", "consumer", *PROCESSES)
HEAVY = ("torch", "shap", "transformers", "optimum", "datasets", "wandb", "sklearn")


def imported_packages(package: str) -> dict[str, set[str]]:
    """{top-level package imported: {file:line, ...}} for every import in ``package``, including
    imports inside functions (where cycles hide)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found.setdefault(name.split(".")[0], set()).add(where)
    return found


def test_the_scan_sees_imports_inside_functions() -> None:
    imports = imported_packages("allocator")
    assert "explainer" in imports  # allocator imports it inside build_parser, not at the top


def test_the_core_imports_no_process_package() -> None:
    imports = imported_packages("consumer")
    bad = {p: sorted(imports[p]) for p in ("allocator", *PROCESSES) if p in imports}
    assert not bad, f"consumer/ must not import process packages: {bad}"


@pytest.mark.parametrize("process", PROCESSES)
def test_a_process_imports_the_core_and_itself_only(process: str) -> None:
    imports = imported_packages(process)
    assert "consumer" in imports
    bad = {
        p: sorted(imports[p]) for p in TOP_LEVEL if p in imports and p not in (process, "consumer")
    }
    assert not bad, f"{process}/ may import only consumer and itself: {bad}"


PROBE = """
import importlib, json, pkgutil, sys
import consumer, consumer.app

seen = {}
def consume(settings, stop=None):  # stands in for the loop: the imports are what is measured
    seen["modules"] = sorted(set(m.split(".")[0] for m in sys.modules))
    return 0
consumer.app.consume = consume
import allocator
status = allocator.main(["consume"])
for info in pkgutil.walk_packages(consumer.__path__, "consumer."):
    importlib.import_module(info.name)  # every core module, lazy imports' targets included
seen["status"] = status
seen["core"] = sorted(set(m.split(".")[0] for m in sys.modules))
print(json.dumps(seen))
"""


def test_allocator_consume_loads_neither_torch_nor_shap() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["status"] == 0
    assert "onnxruntime" in seen["core"]  # the probe did import the runtime
    for where in ("modules", "core"):
        loaded = [m for m in HEAVY if m in seen[where]]
        assert not loaded, f"{where}: the consumer's runtime imported {loaded}"


def test_the_command_line_loads_no_client_library() -> None:
    """``allocator --help`` (every parser built) stays quick: Kafka, Redis and onnxruntime load
    only in the command that uses them."""
    probe = (
        "import json, sys, allocator; allocator.build_parser(); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout)) & {"kafka", "redis", "onnxruntime", "torch"}
    assert not loaded, f"building the parser imported {sorted(loaded)}"
