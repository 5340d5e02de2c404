"""The explainer's token view equals what the consumer scored, and shap's Text masker accepts its
tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from consumer.errors import PackageError
from consumer.inference import TextEncoder
from consumer.package import load_package, write_manifest
from explainer.tokens import PackageTokens, ShapTokenizer, kept_positions

SHORT = "I was charged a late-fee on my card!  Unbelievable."
LONG = "The debt collector calls me every day about a debt I never had, and threatens to sue. " * 20


def tokens_of(package_dir: Path) -> tuple[PackageTokens, TextEncoder]:
    package = load_package(package_dir)
    encoder = TextEncoder(package)
    return PackageTokens(package, encoder), encoder


@pytest.fixture(scope="module")
def head_tail(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny package with the head_tail long-text policy."""
    out = tmp_path_factory.mktemp("ht") / "pkg"
    shutil.copytree(tiny, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tokenizer"]["truncation"] = "head_tail"
    write_manifest(out, manifest)
    return out


def test_kept_positions_for_head_and_head_tail_policies() -> None:
    full = [101, *range(1, 11), 102]
    assert kept_positions(full, full, "head") == list(range(12))
    assert kept_positions(full, [101, 1, 2, 3, 102], "head") == [0, 1, 2, 3, 11]
    assert kept_positions(full, [101, 1, 8, 9, 10, 102], "head_tail") == [0, 1, 8, 9, 10, 11]


def test_kept_positions_of_periodic_text_follow_the_encoders_split() -> None:
    full = [101, *([5, 6] * 10), 102]
    kept = [
        101,
        5,
        6,
        5,
        6,
        5,
        6,
        5,
        6,
        102,
    ]  # room 8: head 2, tail 6 in the encoder's rule; also fits 0..8
    pos = kept_positions(full, kept, "head_tail")
    assert pos == [0, 1, 2, 15, 16, 17, 18, 19, 20, 21]
    assert [full[p] for p in pos] == kept


def test_kept_positions_refuse_what_is_not_a_head_and_tail() -> None:
    with pytest.raises(PackageError):
        kept_positions([101, 1, 2, 3, 4, 102], [101, 2, 3, 102], "head")  # a middle
    with pytest.raises(PackageError):
        kept_positions([101, 1, 102], [101, 1, 2, 3, 102], "head")  # longer than the text


@pytest.mark.parametrize(
    "text", [SHORT, LONG, "short", "Ünïcödé façade — “quotes” and emoji 🙂 too"]
)
def test_view_ids_are_the_encoders_and_offsets_point_at_the_tokens(tiny: Path, text: str) -> None:
    tokens, encoder = tokens_of(tiny)
    view = tokens.view(text)
    enc = encoder.encode([text])[0]
    assert list(view.ids) == enc.ids.tolist()
    assert view.truncated == enc.truncated
    assert (
        view.special[0]
        and view.special[-1]
        and view.offsets[0] is None
        and view.offsets[-1] is None
    )
    for token, off, special in zip(view.tokens, view.offsets, view.special, strict=True):
        if special or token == "[UNK]":
            continue
        assert off is not None
        piece = text[off[0] : off[1]].lower()
        assert piece, token
        if token.isascii() and piece.isascii():
            assert piece == token.removeprefix("##"), (token, piece)


def test_long_text_names_the_span_the_model_never_saw(tiny: Path, head_tail: Path) -> None:
    view = tokens_of(tiny)[0].view(LONG)
    assert view.truncated and len(view.ids) == 128
    (start, end), *_ = view.dropped
    last = max(o[1] for o in view.offsets if o)
    assert start > last and end == len(LONG.rstrip())
    ht_tokens, ht_encoder = tokens_of(head_tail)
    ht = ht_tokens.view(LONG)
    assert list(ht.ids) == ht_encoder.encode([LONG])[0].ids.tolist()
    assert len(ht.dropped) == 1
    start, end = ht.dropped[0]
    kept = [o for o in ht.offsets if o]
    assert any(o[1] <= start for o in kept) and any(o[0] >= end for o in kept), (
        "a head and a tail around the cut"
    )


def test_shap_text_masker_features_are_the_text_tokens(tiny: Path) -> None:
    import shap

    tokens, _ = tokens_of(tiny)
    masker = shap.maskers.Text(
        ShapTokenizer(tokens), mask_token=tokens.mask_id, output_type="token_ids"
    )
    assert (masker.keep_prefix, masker.keep_suffix) == (0, 0), (
        "no special tokens among the features"
    )
    view = tokens.view(SHORT)
    body = view.body
    assert len(body) == len(view.ids) - 2
    assert masker.shape(SHORT) == (1, len(body))
    mask = np.zeros(len(body), dtype=bool)
    mask[2] = True
    (masked,) = masker(mask, SHORT)
    full = view.with_body(masked)[0]
    assert full[0] == view.ids[0] and full[-1] == view.ids[-1], "[CLS] and [SEP] are put back"
    assert full[3] == view.ids[3], "the unmasked feature keeps its id"
    assert all(full[i] == tokens.mask_id for i in range(1, len(full) - 1) if i != 3)
    assert tokens.mask_token == "[MASK]"


def test_a_tokenizer_that_does_not_load_is_a_package_error_in_the_consumer_and_the_explainer(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pkg"
    shutil.copytree(tiny, out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / manifest["tokenizer"]["file"]).write_text('{"model": "not a tokenizer"}')
    package = write_manifest(out, manifest)  # the digests are right: only the tokenizer is broken
    with pytest.raises(PackageError, match=f"{package.ref}: tokenizer does not load"):
        TextEncoder(package)
    with pytest.raises(PackageError, match="tokenizer does not load"):
        PackageTokens(package, TextEncoder(load_package(tiny)))
