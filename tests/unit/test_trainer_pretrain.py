"""Masked-LM adaptation (trainer.pretrain) on a tiny random encoder: masking, the corpus guard, the
stage's training, saving and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.train


def test_choose_masks_only_candidates_in_bert_proportions_and_repeats_per_seed() -> None:
    import torch

    from trainer.pretrain import NOT_CHOSEN, choose

    ids = torch.randint(1000, 2000, (200, 100))
    candidates = torch.ones_like(ids, dtype=torch.bool)
    candidates[:, :1] = False  # [CLS]
    candidates[:, 90:] = False  # [SEP] and padding
    inputs, targets = choose(
        ids, candidates, torch.Generator().manual_seed(0), 0.15, mask_id=103, vocab=3000
    )
    chosen = targets != NOT_CHOSEN
    assert not (chosen & ~candidates).any()  # specials and padding are never predicted
    assert torch.equal(targets[chosen], ids[chosen])  # the target is the original token
    assert torch.equal(inputs[~chosen], ids[~chosen])  # what is not chosen is not touched
    assert chosen.sum() / candidates.sum() == pytest.approx(0.15, abs=0.01)
    masked = (inputs[chosen] == 103).float().mean()
    kept = (inputs[chosen] == ids[chosen]).float().mean()
    assert masked == pytest.approx(0.8, abs=0.02) and kept == pytest.approx(0.1, abs=0.02)

    again = choose(ids, candidates, torch.Generator().manual_seed(0), 0.15, mask_id=103, vocab=3000)
    assert torch.equal(again[0], inputs) and torch.equal(again[1], targets)
    # a batch too short for 15% still teaches something: one position is chosen
    one = choose(
        ids[:1, :3],
        candidates[:1, :3],
        torch.Generator().manual_seed(0),
        1e-9,
        mask_id=103,
        vocab=3000,
    )
    assert int((one[1] != NOT_CHOSEN).sum()) == 1


def test_corpus_keeps_each_text_once_and_no_evaluation_text() -> None:
    from trainer.pretrain import corpus

    c = corpus(
        ["Late fee.", "late   FEE.", "Wrong report."],
        ["A held-out text.", "", "new one"],
        ["a held-out TEXT."],
    )
    assert c.texts == ["Late fee.", "Wrong report.", "new one"] and c.excluded == 1
    same = corpus(["new one", "Wrong report."], ["Late fee."], [])
    assert same.digest == c.digest  # the digest names the set of texts, not their order
    assert corpus(["other"], [], []).digest != c.digest


def tiny_base(folder: Path) -> str:
    from trainer.model import tiny_encoder

    tiny_encoder(0, vocab_size=200).save_pretrained(folder)
    return str(folder)


def test_adapt_trains_the_encoder_saves_it_and_a_resumed_run_reuses_it(tmp_path: Path) -> None:
    import torch

    from trainer import pretrain
    from trainer.model import load_encoder
    from trainer.run_config import TrainConfig
    from trainer.step_loop import Encoded

    base = tiny_base(tmp_path / "base")
    rows = [[1, *range(10 + i, 30 + i), 2] for i in range(40)]
    data = Encoded(ids=rows, labels={})
    cfg = TrainConfig(batch_size=8, mlm_epochs=2, bf16="off", lr=1e-3, head_lr=1e-2)
    kwargs = {"digest": "d1", "pad_id": 0, "mask_id": 3, "special_ids": {1, 2, 3}}
    folder, summary = pretrain.adapt(base, data, cfg, tmp_path / "mlm", **kwargs)

    assert summary["steps"] == 10 and summary["texts"] == 40 and summary["corpus_digest"] == "d1"
    assert json.loads((tmp_path / "mlm" / pretrain.DONE_FILE).read_text()) == summary
    before, after = load_encoder(base).state_dict(), load_encoder(folder).state_dict()
    assert not torch.equal(
        before["encoder.layer.1.output.dense.weight"], after["encoder.layer.1.output.dense.weight"]
    )
    word = "embeddings.word_embeddings.weight"
    assert torch.equal(before[word], after[word])  # frozen as in the fine-tune (freeze_embeddings)

    stamp = (tmp_path / "mlm" / pretrain.DONE_FILE).stat().st_mtime_ns
    again, resumed = pretrain.adapt(base, data, cfg, tmp_path / "mlm", resume=True, **kwargs)
    assert (again, resumed) == (folder, summary)
    assert (tmp_path / "mlm" / pretrain.DONE_FILE).stat().st_mtime_ns == stamp
    # other texts: the saved encoder does not fit them, so the stage runs again
    _, redone = pretrain.adapt(
        base, data, cfg, tmp_path / "mlm", resume=True, **{**kwargs, "digest": "d2"}
    )
    assert redone["corpus_digest"] == "d2"


def test_an_interrupted_stage_resumes_to_the_weights_of_one_that_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from trainer import pretrain
    from trainer.model import load_encoder
    from trainer.run_config import TrainConfig
    from trainer.step_loop import Encoded

    base = tiny_base(tmp_path / "base")
    data = Encoded(ids=[[1, *range(10 + i, 30 + i), 2] for i in range(40)], labels={})
    cfg = TrainConfig(
        batch_size=8, mlm_epochs=2, bf16="off", lr=1e-3, head_lr=1e-2, checkpoint_every=3
    )
    kwargs = {"digest": "d", "pad_id": 0, "mask_id": 3, "special_ids": {1, 2, 3}}
    whole_dir, whole = pretrain.adapt(base, data, cfg, tmp_path / "whole", **kwargs)
    assert not (
        tmp_path / "whole" / pretrain.CHECKPOINT
    ).exists()  # the saved encoder supersedes it

    real, calls = pretrain._accumulate, []

    def killed_at_step_8(*args: object) -> float:
        calls.append(1)
        if (
            len(calls) == 8
        ):  # in epoch 2 (5 batches an epoch), two steps after the checkpoint at step 6
            raise RuntimeError("node lost")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(pretrain, "_accumulate", killed_at_step_8)
    with pytest.raises(RuntimeError, match="node lost"):
        pretrain.adapt(base, data, cfg, tmp_path / "cut", **kwargs)
    assert (tmp_path / "cut" / pretrain.CHECKPOINT).is_file() and not (
        tmp_path / "cut" / pretrain.DONE_FILE
    ).exists()
    monkeypatch.setattr(pretrain, "_accumulate", real)
    cut_dir, cut = pretrain.adapt(base, data, cfg, tmp_path / "cut", resume=True, **kwargs)

    assert cut["steps"] == whole["steps"] == 10 and cut["final_loss"] == whole["final_loss"]
    a, b = load_encoder(whole_dir).state_dict(), load_encoder(cut_dir).state_dict()
    # masks, dropout, optimiser and batch order all picked up (AutoModel gives the tiny encoder,
    # saved without a pooler, a fresh random one at each load: it is not trained, so it is left out)
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("pooler."))


def test_adapt_learns_the_masked_tokens() -> None:
    """On a corpus of one repeated sentence the masked tokens become predictable: the loss falls far
    below the uniform guess (ln 200)."""
    import math
    import tempfile

    from trainer import pretrain
    from trainer.run_config import TrainConfig
    from trainer.step_loop import Encoded

    with tempfile.TemporaryDirectory() as tmp:
        base = tiny_base(Path(tmp) / "base")
        data = Encoded(ids=[[1, *range(10, 40), 2]] * 64, labels={})
        cfg = TrainConfig(
            batch_size=16, mlm_epochs=40, bf16="off", lr=1e-2, head_lr=1e-1, warmup_ratio=0.0
        )
        logged: list[tuple[dict[str, float], int]] = []
        kwargs = {"digest": "d", "pad_id": 0, "mask_id": 3, "special_ids": {1, 2, 3}}
        _, summary = pretrain.adapt(
            base, data, cfg, Path(tmp) / "mlm", on_log=lambda m, s: logged.append((m, s)), **kwargs
        )
    assert summary["final_loss"] < 0.3 * math.log(200)
    assert [s for _, s in logged] == list(range(20, 161, 20))  # the loss curve, for W&B
    assert (
        logged[-1][0]["mlm/loss"] == summary["final_loss"]
        and logged[0][0]["mlm/loss"] > summary["final_loss"]
    )


def test_mlm_settings_are_checked_and_sources_become_a_tuple(tmp_path: Path) -> None:
    from consumer.errors import ConfigError
    from trainer.cli import build_parser
    from trainer.run_config import TrainConfig, load_config

    assert TrainConfig().mlm_epochs == 0  # off unless asked for
    assert load_config(None, mlm_data="a.csv").mlm_data == ("a.csv",)
    args = build_parser().parse_args(
        ["train", "--mlm_data", "a.csv", "--mlm-data", "b.csv", "--mlm_epochs", "1"]
    )
    assert args.mlm_data == ["a.csv", "b.csv"] and args.mlm_epochs == 1.0
    for bad in ({"mlm_probability": 0.0}, {"mlm_probability": 1.0}, {"mlm_epochs": -1.0}):
        with pytest.raises(ConfigError, match="mlm_"):
            TrainConfig(**bad)  # type: ignore[arg-type]
