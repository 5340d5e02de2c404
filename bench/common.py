"""Shared by the benchmarks: the local stack's addresses, real CFPB texts, and a MiniLM-sized int8
package."""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
from pathlib import Path

from trainer.paths import DEFAULT_DATA as DATA

ROOT = Path(__file__).resolve().parents[1]

CACHE = Path(os.environ.get("CA_CACHE_DIR", Path.home() / ".cache" / "complaints-allocation"))


def stack_env() -> dict[str, str]:
    """KAFKA_BOOTSTRAP_SERVERS and REDIS_URL: from the environment, else from the local stack
    (started if down)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL"):
        return {k: os.environ[k] for k in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")}
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "stack.sh"), "up"], check=True, stdout=subprocess.DEVNULL
    )
    env = {}
    for line in (ROOT / ".stack" / "env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


def cfpb_texts(n: int, split: str = "test") -> list[tuple[str, str]]:
    """(complaint id, narrative) of the first ``n`` rows of ``split``."""
    out = []
    with gzip.open(DATA, "rt", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] == split and row["Consumer complaint narrative"].strip():
                out.append((row["Complaint ID"], row["Consumer complaint narrative"]))
                if len(out) == n:
                    break
    return out


def minilm_package(explicit: str | None = None) -> Path:
    """The package to measure: ``explicit``, else the trained default model if cached, else an
    untrained MiniLM package (same graph and cost as the trained one; its predictions are
    meaningless)."""
    if explicit:
        return Path(explicit)
    trained = CACHE / "models" / "default"
    if (trained / "manifest.json").is_file():
        return trained
    out = CACHE / "models" / "minilm-untrained"
    if not (out / "manifest.json").is_file():
        build_untrained(out)
    return out


def build_untrained(out: Path, max_length: int = 256) -> None:
    """Export the MiniLM encoder with fresh heads through the trainer's real export path (int8)."""
    import shutil

    from trainer import export, model, packaging
    from trainer.labels import load_label_space
    from trainer.tiny import CHECK_TEXTS

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    space = load_label_space()
    base = model.default_base_model()
    net = model.build(model.load_encoder(base), space.tasks, 0).eval()
    packaging.write_tokenizer(base / "tokenizer.json", out, max_length)
    name, version = "minilm-untrained", "bench-0"
    fp32, served = packaging.draft_graphs(
        out, space.tasks, max_length=max_length, truncation="head", name=name, version=version
    )
    report = export.export_all(net, fp32, served, CHECK_TEXTS, min_int8_agreement=0.0)
    packaging.write_package(
        out,
        name=name,
        version=version,
        heads=packaging.default_heads(space.tasks),
        report=report,
        max_length=max_length,
        truncation="head",
        metrics={},
        lineage={
            "dataset_digest": None,
            "wandb_run": None,
            "code_commit": packaging.code_commit(),
            "base_model": str(base),
            "label_maps_version": space.version,
        },
        description="Untrained heads on the MiniLM encoder: for speed measurements only.",
        created_at="2024-01-01T00:00:00Z",
    )
