"""The fine-tune's training loop (``trainer.fit``, ``trainer.step_loop``, ``trainer.finetune``) on a
tiny random encoder: batching, class weights, checkpoints and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.errors import DataError
from trainer.run_config import TrainConfig, load_config

pytestmark = pytest.mark.train


def data(n: int = 48) -> tuple[list[list[int]], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    ids = [[101, *rng.integers(1000, 2000, rng.integers(3, 20)).tolist(), 102] for _ in range(n)]
    labels = {"team": rng.integers(0, 3, n), "vulnerable": rng.integers(0, 2, n)}
    return ids, labels


def test_length_grouped_batches_cover_every_row_once_and_are_deterministic() -> None:
    from trainer.step_loop import length_grouped_batches

    lengths = list(np.random.default_rng(1).integers(5, 200, 333))
    batches = length_grouped_batches(lengths, 16, seed=7, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(333))
    assert batches == length_grouped_batches(lengths, 16, seed=7, epoch=0)
    assert batches != length_grouped_batches(lengths, 16, seed=7, epoch=1)
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 40  # similar lengths share a batch


def test_class_weights_dampen_imbalance_and_zero_absent_labels() -> None:
    from trainer.fit import class_weights

    w = class_weights(np.array([0] * 90 + [1] * 10), 3, power=0.5).numpy()
    assert w[1] > w[0] and w[2] == 0.0
    assert w[1] / w[0] == pytest.approx(3.0)  # sqrt(90 / 10)
    assert class_weights(np.array([0, 1, 1]), 2, power=0.0).tolist() == [1.0, 1.0]


def test_class_weights_ignore_unlabelled_rows() -> None:
    from trainer.fit import class_weights
    from trainer.labels import IGNORE

    y = np.array([0] * 90 + [1] * 10 + [IGNORE] * 500)
    assert class_weights(y, 2, power=1.0).tolist() == pytest.approx([100 / 180, 100 / 20])


def test_batch_loss_leaves_out_a_task_without_labels_in_the_batch() -> None:
    import torch
    from torch import nn

    from trainer.fit import batch_loss
    from trainer.labels import IGNORE

    out = {
        "team_logits": torch.tensor([[2.0, 0.0], [0.0, 2.0]]),
        "issue_logits": torch.tensor([[1.0, 0.0]] * 2),
    }
    weights = {"team": torch.ones(2), "issue": torch.ones(2)}
    team_only = batch_loss(
        out, {"team": np.array([0, IGNORE]), "issue": np.array([IGNORE, IGNORE])}, weights, {}
    )
    expected = nn.functional.cross_entropy(out["team_logits"][:1], torch.tensor([0]))
    assert team_only is not None and torch.isfinite(team_only)
    assert float(team_only) == pytest.approx(float(expected))
    both = batch_loss(
        out, {"team": np.array([0, 1]), "issue": np.array([1, 1])}, weights, {"issue": 2.0}
    )
    issue = nn.functional.cross_entropy(out["issue_logits"], torch.tensor([1, 1]))
    team = nn.functional.cross_entropy(out["team_logits"], torch.tensor([0, 1]))
    assert both is not None and float(both) == pytest.approx(float(team + 2.0 * issue))
    none = batch_loss(
        out, {"team": np.array([IGNORE] * 2), "issue": np.array([IGNORE] * 2)}, weights, {}
    )
    assert none is None


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_batch_loss_is_pytorchs_class_weighted_mean(smoothing: float) -> None:
    """Also with PyTorch's label smoothing, which is off by default."""
    import torch
    from torch import nn

    from trainer.fit import batch_loss
    from trainer.labels import IGNORE

    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 0.5], [1.0, 1.0, 1.0], [0.3, 0.1, 3.0]])
    y = np.array([0, 2, IGNORE, 1])
    w = torch.tensor([0.5, 2.0, 3.0])
    target = torch.from_numpy(y)
    expected = nn.CrossEntropyLoss(weight=w, ignore_index=IGNORE, label_smoothing=smoothing)(
        logits, target
    )
    got = batch_loss(
        {"team_logits": logits}, {"team": y}, {"team": w}, {}, label_smoothing=smoothing
    )
    assert got is not None and float(got) == pytest.approx(float(expected))
    plain = nn.CrossEntropyLoss(weight=w, ignore_index=IGNORE)(logits, target)
    assert (float(expected) == pytest.approx(float(plain))) == (smoothing == 0.0)
    assert TrainConfig().label_smoothing == 0.0


def test_probe_fits_the_heads_and_leaves_the_encoder_untouched() -> None:
    """LP-FT's first stage: the heads' loss falls on the frozen features; no encoder weight
    moves."""
    import torch

    from trainer import model
    from trainer.fit import batch_loss, class_weights, probe_heads
    from trainer.step_loop import Encoded, pad

    rng = np.random.default_rng(2)
    n = 64
    labels = {"team": rng.integers(0, 3, n), "vulnerable": rng.integers(0, 2, n)}
    # the label is written in the text (token 1000 + label), so the frozen features can separate it
    ids = [
        [101, 1000 + int(labels["team"][i]), *rng.integers(1100, 2000, 5).tolist(), 102]
        for i in range(n)
    ]
    data = Encoded(ids, labels)
    weights = {
        t: class_weights(y, k, 0.5) for (t, y), k in zip(labels.items(), (3, 2), strict=True)
    }
    net = model.build(
        model.tiny_encoder(0, vocab_size=2048),
        {"team": ("a", "b", "c"), "vulnerable": ("n", "y")},
        0,
    )
    encoder_before = {k: v.clone() for k, v in net.encoder.state_dict().items()}

    def loss() -> float:
        with torch.no_grad():
            value = batch_loss(net(*pad(ids, 0)), labels, weights, {})
        assert value is not None
        return float(value)

    net.eval()
    before = loss()
    cfg = TrainConfig(probe_epochs=30, batch_size=16, head_lr=0.05, weight_decay=0.0, bf16="off")
    probe_heads(net, data, weights, cfg, 0, False)
    assert loss() < 0.8 * before
    for k, v in net.encoder.state_dict().items():
        torch.testing.assert_close(v, encoder_before[k], rtol=0, atol=0, msg=k)


def test_fit_probes_only_a_fresh_run(tmp_path: Path) -> None:
    from trainer import model
    from trainer.fit import fit
    from trainer.step_loop import Encoded

    ids, labels = data()
    tasks = {"team": ("a", "b", "c"), "vulnerable": ("no", "yes")}
    cfg = TrainConfig(batch_size=8, max_steps=2, probe_epochs=2, bf16="off", threads=1)
    first = fit(
        model.build(model.tiny_encoder(0), tasks, 0),
        Encoded(ids, labels),
        cfg,
        tmp_path,
        pad_id=0,
        data_digest="d",
    )
    assert first["probe_loss"] is not None and first["probe_loss"] > 0
    resumed = fit(
        model.build(model.tiny_encoder(0), tasks, 0),
        Encoded(ids, labels),
        cfg.replace(max_steps=3),
        tmp_path,
        pad_id=0,
        data_digest="d",
        resume=True,
    )
    assert resumed["probe_loss"] is None and resumed["steps"] == 3
    plain = fit(
        model.build(model.tiny_encoder(0), tasks, 0),
        Encoded(ids, labels),
        TrainConfig(batch_size=8, max_steps=1, bf16="off", threads=1),
        tmp_path / "p",
        pad_id=0,
        data_digest="d",
    )
    assert plain["probe_loss"] is None


def test_micro_batches_respect_the_token_budget_and_cover_every_row() -> None:
    from trainer.step_loop import micro_batches

    lengths = list(np.random.default_rng(3).integers(5, 300, 64))
    rows = list(range(10, 42))
    pieces = micro_batches(rows, lengths, 1024)
    assert sorted(i for p in pieces for i in p) == rows
    for p in pieces:
        assert len(p) == 1 or len(p) * max(lengths[i] for i in p) <= 1024
    assert len(pieces) > 1
    assert micro_batches(rows, lengths, 0) == [rows]
    assert micro_batches([0], [5000], 1024) == [[0]]  # longer than the budget: a piece of its own


def test_accumulated_micro_batches_give_the_whole_batch_gradient() -> None:
    """The pieces' gradients add up to one pass over the whole batch (class weights, an unlabelled
    task row, very different lengths): micro-batching changes the cost, not the update."""
    import torch

    from trainer import model
    from trainer.fit import accumulate, class_weights
    from trainer.labels import IGNORE
    from trainer.step_loop import Encoded

    rng = np.random.default_rng(5)
    n = 12
    ids = [[101, *rng.integers(1000, 2000, int(k)).tolist(), 102] for k in rng.integers(3, 60, n)]
    labels = {"team": rng.integers(0, 3, n), "vulnerable": rng.integers(0, 2, n)}
    labels["vulnerable"][[1, 4, 7]] = IGNORE
    data = Encoded(ids, labels)
    weights = {
        "team": class_weights(labels["team"], 3, 0.5),
        "vulnerable": class_weights(labels["vulnerable"], 2, 1),
    }

    def grads(budget: int) -> tuple[float, dict[str, torch.Tensor]]:
        heads = {"team": ("a", "b", "c"), "vulnerable": ("no", "yes")}
        net = model.build(model.tiny_encoder(0, vocab_size=2048), heads, seed=0).eval()
        cfg = TrainConfig(micro_batch_tokens=budget, task_weights={"team": 1.0, "vulnerable": 0.5})
        loss = accumulate(net, data, list(range(n)), weights, cfg, 0, False)
        return loss, {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}

    whole_loss, whole = grads(0)
    split_loss, split = grads(128)
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    assert whole.keys() == split.keys() and len(whole) > 10
    for k in whole:
        torch.testing.assert_close(split[k], whole[k], rtol=1e-4, atol=1e-6, msg=k)


def test_fit_refuses_a_task_with_no_labelled_row(tmp_path: Path) -> None:
    from trainer import model
    from trainer.fit import fit
    from trainer.labels import IGNORE
    from trainer.step_loop import Encoded

    ids, labels = data(16)
    labels["vulnerable"] = np.full(16, IGNORE)
    tasks = {"team": ("a", "b", "c"), "vulnerable": ("no", "yes")}
    cfg = TrainConfig(batch_size=8, max_steps=1, bf16="off", threads=1)
    net = model.build(model.tiny_encoder(0), tasks, 0)
    with pytest.raises(DataError, match="vulnerable"):
        fit(net, Encoded(ids, labels), cfg, tmp_path, pad_id=0, data_digest="d")


def test_fit_checkpoints_and_resumes(tmp_path: Path) -> None:
    import torch

    from trainer import model
    from trainer.fit import CHECKPOINT, fit
    from trainer.step_loop import Encoded

    ids, labels = data()
    tasks = {"team": ("a", "b", "c"), "vulnerable": ("no", "yes")}
    cfg = TrainConfig(
        batch_size=8,
        max_steps=4,
        checkpoint_every=2,
        bf16="off",
        threads=1,
        task_weights={"team": 1.0, "vulnerable": 1.0},
    )
    net = model.build(model.tiny_encoder(0), tasks, 0)
    summary = fit(net, Encoded(ids, labels), cfg, tmp_path, pad_id=0, data_digest="d1")
    assert summary["steps"] == 4 and not summary["stopped_early"]
    state = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert state["step"] == 4 and state["data_digest"] == "d1"

    longer = cfg.replace(max_steps=7)
    net2 = model.build(model.tiny_encoder(0), tasks, 0)
    summary2 = fit(
        net2, Encoded(ids, labels), longer, tmp_path, pad_id=0, data_digest="d1", resume=True
    )
    assert summary2["steps"] == 7
    with pytest.raises(DataError):
        fit(
            model.build(model.tiny_encoder(0), tasks, 0),
            Encoded(ids, labels),
            longer,
            tmp_path,
            pad_id=0,
            data_digest="other",
            resume=True,
        )


def test_an_interrupted_fine_tune_resumes_to_the_weights_and_loss_of_one_that_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import trainer.fit
    from trainer import model
    from trainer.fit import fit
    from trainer.step_loop import Encoded

    ids, labels = data()  # 6 batches an epoch
    tasks = {"team": ("a", "b", "c"), "vulnerable": ("no", "yes")}
    cfg = TrainConfig(batch_size=8, epochs=2, checkpoint_every=4, bf16="off", threads=1)

    def net() -> model.MultiTaskModel:
        return model.build(model.tiny_encoder(0), tasks, 0)

    whole_net = net()
    whole = fit(whole_net, Encoded(ids, labels), cfg, tmp_path / "whole", pad_id=0, data_digest="d")

    real, calls = trainer.fit.accumulate, []

    def killed_at_step_10(*args: object) -> float:
        calls.append(1)
        if len(calls) == 10:  # in epoch 2, one step after the checkpoint at step 8
            raise RuntimeError("node lost")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer.fit, "accumulate", killed_at_step_10)
    with pytest.raises(RuntimeError, match="node lost"):
        fit(net(), Encoded(ids, labels), cfg, tmp_path / "cut", pad_id=0, data_digest="d")
    monkeypatch.setattr(trainer.fit, "accumulate", real)
    cut_net = net()
    cut = fit(
        cut_net, Encoded(ids, labels), cfg, tmp_path / "cut", pad_id=0, data_digest="d", resume=True
    )

    assert cut["steps"] == whole["steps"] == 12 and cut["final_loss"] == whole["final_loss"]
    a, b = (
        whole_net.state_dict(),
        cut_net.state_dict(),
    )  # dropout, optimiser and batch order all picked up
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_epoch_hook_and_time_guard(tmp_path: Path) -> None:
    from trainer import model
    from trainer.fit import fit
    from trainer.step_loop import Encoded

    ids, labels = data(16)
    tasks = {"team": ("a", "b", "c"), "vulnerable": ("no", "yes")}
    seen: list[int] = []
    cfg = TrainConfig(batch_size=8, epochs=2, checkpoint_every=0, bf16="off", threads=1)
    fit(
        model.build(model.tiny_encoder(0), tasks, 0),
        Encoded(ids, labels),
        cfg,
        tmp_path,
        pad_id=0,
        data_digest="d",
        on_eval=lambda epoch, step: seen.append(step),
    )
    assert seen == [2, 4]
    stopped = fit(
        model.build(model.tiny_encoder(0), tasks, 0),
        Encoded(ids, labels),
        cfg.replace(max_minutes=1e-9),
        tmp_path / "b",
        pad_id=0,
        data_digest="d",
    )
    assert stopped["stopped_early"] and stopped["steps"] == 0


def test_config_file_and_overrides(tmp_path: Path) -> None:
    from consumer.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("max_length: 64\ndata: /x.csv\n")
    cfg = load_config(path, epochs=1.5, lr=None)
    assert (cfg.max_length, cfg.epochs, cfg.data, cfg.lr) == (
        64,
        1.5,
        ("/x.csv",),
        TrainConfig().lr,
    )
    with pytest.raises(ConfigError):
        load_config(None, no_such_field=1)
    default = load_config(Path(__file__).parents[2] / "trainer/config/train.default.yaml")
    assert default.max_length <= 512 and default.quantize


def test_soup_seeds_come_from_yaml_as_a_tuple_and_bad_ones_are_refused(tmp_path: Path) -> None:
    from consumer.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("seed: 13\nsoup_seeds: [14, 15]\n")
    assert load_config(path).soup_seeds == (14, 15)
    assert TrainConfig().soup_seeds == ()
    # the main seed again, a repeat, a bare number, a float: each would train nothing new or is not
    # a seed list
    for bad in ([13], [14, 14], 14, "14", [1.5], [True]):
        with pytest.raises(ConfigError, match="soup_seeds"):
            TrainConfig(seed=13, soup_seeds=bad)  # type: ignore[arg-type]


def test_average_into_is_the_mean_of_the_float_weights_only() -> None:
    import torch

    from consumer.errors import ModelError
    from trainer import model

    labels = {"team": ("a", "b", "c"), "vulnerable": ("n", "y")}
    nets = [model.build(model.tiny_encoder(s, vocab_size=64), labels, s) for s in (0, 1, 2)]
    before = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    model.average_into(nets[0], nets[1:])
    after = nets[0].state_dict()
    for name, tensor in after.items():
        if tensor.is_floating_point():
            expected = (before[0][name] + before[1][name] + before[2][name]) / 3
            torch.testing.assert_close(tensor, expected, msg=name)
        else:  # position ids are indices, not weights
            assert torch.equal(tensor, before[0][name]), name
    assert not torch.equal(after["heads.team.weight"], before[0]["heads.team.weight"])
    for other, state in zip(
        nets[1:], before[1:], strict=True
    ):  # the ingredients are read, not changed
        assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())

    wider = model.build(
        model.tiny_encoder(0, vocab_size=64), {**labels, "team": ("a", "b", "c", "d")}, 0
    )
    with pytest.raises(ModelError, match=r"heads\.team"):
        model.average_into(nets[0], [wider])


def test_a_fine_tune_keeps_its_last_epoch_evaluation_only_when_it_is_of_the_final_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soup reads each ingredient's validation accuracy from ``run``'s summary instead of
    predicting again; that is only right when no update came after the last epoch's evaluation."""
    from trainer import model
    from trainer.finetune import FineTune
    from trainer.labels import load_label_space
    from trainer.step_loop import Encoded
    from trainer.tracking import Tracker

    space = load_label_space()
    ids, _ = data(16)
    rng = np.random.default_rng(1)
    labels = {t: rng.integers(0, len(names), 16) for t, names in space.tasks.items()}
    monkeypatch.setattr(model, "load_encoder", lambda base: model.tiny_encoder(0))
    tune = FineTune(
        "tiny", space, Encoded(ids, labels), Encoded(ids, labels), 0, "d", Tracker(None), False
    )
    cfg = TrainConfig(batch_size=8, epochs=2, checkpoint_every=0, bf16="off", threads=1)

    net, summary = tune.run(cfg, tmp_path / "whole")  # 4 steps, evaluated at 2 and 4
    assert summary["val_accuracy"] == tune.val_accuracy(net)
    net, stopped = tune.run(
        cfg.replace(max_steps=3), tmp_path / "stopped"
    )  # evaluated at 2, stopped at 3
    assert "val_accuracy" not in stopped
    assert tune._with_val_accuracy(net, stopped)["val_accuracy"] == tune.val_accuracy(net)
