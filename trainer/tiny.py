"""``python -m trainer tiny``: a small random-weight package for consumer tests, with no data and no
hub; and two helpers built on it.

Same label sets as a real model (from the versioned maps), same tokenizer (MiniLM's WordPiece
vocabulary), same export, parity and int8 path as training. Deterministic per seed: the weights, the
ONNX bytes and ``created_at`` are fixed, so the same seed gives the same package digest; ``version``
is ``tiny-s<seed>``.

- ``tiny_base``: the same random encoder as a base-model folder, so that ``python -m trainer train
  --base_model DIR`` fine-tunes it in seconds (the quick demo's retraining).
- ``failing_copy``: a copy of any package that verifies but fails at run time (the circuit breaker
  tests, the demo's bad release). It needs onnx and numpy only.

Torch is imported by the functions that need it, so ``failing_copy`` runs without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from consumer.package import ModelPackage

NAME = "tiny-minilm"
MAX_LENGTH = 128
CREATED_AT = "2024-01-01T00:00:00Z"
# Parity and int8 checks need some text; these are invented, not customer data.
CHECK_TEXTS = (
    "I was charged a late fee on my credit card even though I paid on time.",
    "The debt collector keeps calling me about a debt I do not owe.",
    "My mortgage servicer lost my payment and reported me late to the credit bureaus.",
    "There is an account on my credit report that is not mine and the bureau will not remove it.",
    "My bank closed my checking account without notice and kept my money.",
    "The payday lender took two withdrawals from my account on the same day.",
    "I am a veteran and my student loan servicer put me in forbearance without asking.",
    "short",
)


def build_tiny(out: Path, seed: int = 0) -> ModelPackage:
    """Write a tiny package to ``out`` (replacing what is there) and return it verified."""
    import torch

    from trainer import export, model, packaging
    from trainer.labels import load_label_space

    # tiny graphs: threads cost more than they save, and keep results identical
    torch.set_num_threads(1)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    space = load_label_space()
    labels = space.tasks
    net = model.build(model.tiny_encoder(seed), labels, seed).eval()
    packaging.write_tokenizer(model.default_base_model() / "tokenizer.json", out, MAX_LENGTH)
    version = f"tiny-s{seed}"
    fp32, served = packaging.draft_graphs(
        out, labels, max_length=MAX_LENGTH, truncation="head", name=NAME, version=version
    )
    # Random weights give near-tied logits, so int8 may flip labels: agreement is recorded, not
    # gated.
    report = export.export_all(net, fp32, served, CHECK_TEXTS, min_int8_agreement=0.0)
    return packaging.write_package(
        out,
        name=NAME,
        version=version,
        heads=packaging.default_heads(labels),
        report=report,
        max_length=MAX_LENGTH,
        truncation="head",
        metrics={},
        lineage={
            "dataset_digest": None,
            "wandb_run": None,
            "code_commit": "tiny",
            "base_model": f"random BertConfig(hidden=32, layers=2, heads=2) seed={seed}",
            "label_maps_version": space.version,
        },
        description="Random weights for tests: predictions are meaningless.",
        created_at=CREATED_AT,
    )


def tiny_base(out: Path, seed: int = 0) -> Path:
    """The tiny random encoder of ``build_tiny`` as a base-model folder (transformers format plus
    MiniLM's ``tokenizer.json``), for ``trainer train --base_model``. Replaces ``out``."""
    from trainer import model

    if out.exists():
        shutil.rmtree(out)
    model.tiny_encoder(seed).save_pretrained(out)
    shutil.copy2(model.default_base_model() / "tokenizer.json", out / "tokenizer.json")
    return out


def failing_copy(src: Path, dst: Path) -> Path:
    """A copy of package ``src`` that loads and verifies (its digests are rewritten) but whose graph
    fails at run time on every batch: ``team_logits`` goes through a Reshape to ``[1, 1]``, which no
    ``[batch, n]`` tensor fits. Version ``<version>-broken``, so it registers beside ``src``.
    Replaces ``dst``."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from consumer.package import load_package, write_manifest

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    manifest = load_package(dst).manifest
    path = dst / manifest["onnx"]["file"]
    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    out = "team_logits"
    for node in graph.node:  # the node that makes the output now makes a tensor the Reshape reads
        node.output[:] = [f"{o}_unbroken" if o == out else o for o in node.output]
    shape = numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "one_by_one")
    graph.initializer.append(shape)
    graph.node.append(helper.make_node("Reshape", [f"{out}_unbroken", "one_by_one"], [out]))
    onnx.save(graph_model, str(path))
    write_manifest(dst, {**manifest, "version": f"{manifest['version']}-broken"})
    return dst
