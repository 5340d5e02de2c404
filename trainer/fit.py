"""One fine-tune in torch: the class-weighted multi-task loss, the optional LP-FT probe, ``fit``
(AdamW with linear warmup and decay, checkpoints every N steps and at each epoch end, ``resume``)
and ``predict``. The step loop itself and the batching are ``trainer.step_loop``'s, shared with the
masked-LM stage; ``trainer.finetune`` runs this for the main run and a soup's ingredients.

Each optimiser batch is computed in token-bounded micro-batches whose gradients add up to the whole
batch's (``micro_batch_tokens``). On a 2-core CPU the cost per token roughly doubles once a
forward/backward pass holds more than ~4k tokens (32 x 256 tokens: 0.81 ms/token; 8 x 256: 0.45), so
splitting saves 1.14-1.24x on 256-token batches (docs/trainer.md). The update is the same as one
pass over the batch: the loss of each piece is divided by the whole batch's class-weight sum (see
``batch_loss``).

A checkpoint (``<out>/checkpoints/last.pt``) holds model, optimiser, scheduler and RNG state, the
smoothed loss, and the position in the epoch's batch order, which is a pure function of (seed,
epoch): a resumed run replays the same batches from where it stopped and ends as one that never
stopped. It also records the dataset digest; resuming on other data is refused.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from trainer import step_loop
from trainer.errors import DataError
from trainer.labels import IGNORE
from trainer.model import MultiTaskModel, output_name
from trainer.run_config import TrainConfig
from trainer.step_loop import (
    Encoded,
    Position,
    length_grouped_batches,
    micro_batches,
    pad,
    save_checkpoint,
    use_bf16,
)

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
# Padded tokens per pass for forward-only passes over a whole split (validation, the LP-FT probe's
# features).
FORWARD_TOKENS = 4096


def class_weights(y: np.ndarray, n_labels: int, power: float) -> torch.Tensor:
    """(n / (k * count)) ** power over the labelled rows (``IGNORE`` rows left out); labels absent
    from training get weight 0 (nothing to learn from)."""
    y = y[y != IGNORE]
    counts = np.bincount(y, minlength=n_labels).astype(np.float64)
    w = np.where(counts > 0, (len(y) / (n_labels * np.maximum(counts, 1))) ** power, 0.0)
    return torch.tensor(w, dtype=torch.float32)


def loss_denominators(
    labels: Mapping[str, np.ndarray], weights: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """Per task, the sum of class weights over the labelled rows of a batch: the divisor of
    PyTorch's class-weighted ``mean`` cross-entropy. Dividing each micro-batch's summed loss by the
    whole batch's divisor makes the pieces' gradients add up exactly to the whole batch's."""
    out = {}
    for task, w in weights.items():
        y = labels[task]
        out[task] = float(w[torch.from_numpy(y[y != IGNORE])].sum())
    return out


def batch_loss(
    out: dict[str, torch.Tensor],
    labels: Mapping[str, np.ndarray],
    weights: Mapping[str, torch.Tensor],
    task_weights: Mapping[str, float],
    denominators: Mapping[str, float] | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor | None:
    """Task-weighted sum of class-weighted cross-entropies, each divided by ``denominators[task]``
    (default: this batch's own, which is the ``mean`` reduction); ``None`` when no task has a term.
    ``label_smoothing`` is PyTorch's (the target mixes in ``label_smoothing / k`` of every class).

    A task with nothing to divide by (no labelled row in the whole batch) is left out rather than
    averaged over nothing (which is NaN); so is a task with no labelled row in this piece. Every row
    has a team (the loaders drop rows without one), so a whole batch always has a term.
    """
    denominators = denominators if denominators is not None else loss_denominators(labels, weights)
    terms = []
    for task, w in weights.items():
        y = labels[task]
        if denominators[task] <= 0 or not np.any(y != IGNORE):
            continue
        summed = nn.functional.cross_entropy(
            out[output_name(task)].float(),
            torch.from_numpy(y),
            weight=w,
            ignore_index=IGNORE,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        terms.append(task_weights.get(task, 1.0) * summed / denominators[task])
    return torch.stack(terms).sum() if terms else None


def padded_pieces(
    data: Encoded, rows: Sequence[int], pad_id: int, max_tokens: int
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """``(piece, input_ids, attention_mask)`` for each micro-batch of ``rows`` (see
    ``micro_batches``)."""
    for piece in micro_batches(rows, data.lengths, max_tokens):
        ids, mask = pad([data.ids[i] for i in piece], pad_id)
        yield piece, ids, mask


def predict(
    model: MultiTaskModel, data: Encoded, pad_id: int, max_tokens: int = FORWARD_TOKENS
) -> dict[str, np.ndarray]:
    """Softmax probabilities per task, in input order (PyTorch; the per-epoch validation check),
    computed in pieces of at most ``max_tokens`` padded tokens."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {t: [] for t in model.tasks}
    done: list[int] = []
    with torch.no_grad():
        for piece, ids, mask in padded_pieces(data, range(len(data)), pad_id, max_tokens):
            out = model(ids, mask)
            for t in model.tasks:
                parts[t].append(torch.softmax(out[output_name(t)], dim=-1).numpy())
            done += piece
    order = np.array(done)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return {t: np.concatenate(p)[inverse] for t, p in parts.items()}


def accumulate(
    model: MultiTaskModel,
    train: Encoded,
    batch: list[int],
    weights: Mapping[str, torch.Tensor],
    cfg: TrainConfig,
    pad_id: int,
    autocast: bool,
) -> float:
    """Forward and backward one optimiser batch in micro-batches; gradients accumulate in ``.grad``.
    Returns the batch's loss (the sum of the pieces' losses, which is the whole batch's)."""
    labels = {t: train.labels[t][batch] for t in weights}
    denominators = loss_denominators(labels, weights)
    total = 0.0
    for piece, ids, mask in padded_pieces(train, batch, pad_id, cfg.micro_batch_tokens):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(ids, mask)
        piece_labels = {t: train.labels[t][piece] for t in weights}
        loss = batch_loss(
            out, piece_labels, weights, cfg.task_weights, denominators, cfg.label_smoothing
        )
        if loss is not None:
            loss.backward()
            total += float(loss.detach())
    return total


def probe_heads(
    model: MultiTaskModel,
    train: Encoded,
    weights: Mapping[str, torch.Tensor],
    cfg: TrainConfig,
    pad_id: int,
    autocast: bool,
) -> float:
    """LP-FT's first stage (Kumar et al., ICLR 2022): fit the heads alone, for ``cfg.probe_epochs``
    epochs, on the frozen encoder's pooled features (no dropout), so that the fine-tune starts from
    heads that already fit instead of random ones whose early gradients distort the pretrained
    features.

    The encoder is only read (one forward pass over the training rows); only ``model.heads`` change.
    Returns the probe's mean loss over its last epoch."""
    model.eval()
    features = torch.empty(len(train), int(model.config.hidden_size))
    with torch.no_grad():
        for piece, ids, mask in padded_pieces(train, range(len(train)), pad_id, FORWARD_TOKENS):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                features[piece] = model.pool(ids, mask).float()
    opt = torch.optim.AdamW(model.heads.parameters(), lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    # its own stream: the fine-tune's batch order is unchanged
    rng = np.random.default_rng([cfg.seed, 1 << 20])
    last = 0.0
    for _ in range(cfg.probe_epochs):
        losses = []
        order = rng.permutation(len(train))
        for lo in range(0, len(order), cfg.batch_size):
            b = order[lo : lo + cfg.batch_size]
            out = {output_name(t): head(features[b]) for t, head in model.heads.items()}
            labels = {t: train.labels[t][b] for t in weights}
            loss = batch_loss(
                out, labels, weights, cfg.task_weights, label_smoothing=cfg.label_smoothing
            )
            if loss is None:
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        last = float(np.mean(losses)) if losses else 0.0
    log.info(
        "train: probed the heads for %d epochs on frozen features (loss %.4f)",
        cfg.probe_epochs,
        last,
    )
    return last


def fit(
    model: MultiTaskModel,
    train: Encoded,
    cfg: TrainConfig,
    ckpt_dir: Path,
    *,
    pad_id: int,
    data_digest: str,
    resume: bool = False,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    on_eval: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place; returns a summary: steps done and planned, epochs, the final
    smoothed loss, whether the deadline (``max_minutes``) stopped it, and the LP-FT probe's loss
    (None when no probe ran). ``on_eval(epoch, step)`` runs after each epoch's checkpoint.
    ``DataError`` when there is no training row, a task has no labelled row, or ``resume`` finds a
    checkpoint made on other data (``data_digest``)."""
    if not len(train):
        raise DataError("no training rows")
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    opt, sched = _optimiser(model, cfg, total)
    weights = _task_weights(model, train, cfg)
    ckpt = ckpt_dir / CHECKPOINT
    pos = (
        _resumed(ckpt, data_digest, model, opt, sched) if resume and ckpt.is_file() else Position()
    )
    checkpoint = _checkpointer(ckpt, model, opt, sched, pos, data_digest, cfg)
    autocast = use_bf16(cfg.bf16)
    probe_loss = None
    if cfg.probe_epochs and pos.step == 0:  # a resumed run already has its probed, trained heads
        probe_loss = probe_heads(model, train, weights, cfg, pad_id, autocast)
    facts = (len(train), total, cfg.batch_size, autocast)
    log.info("train: %d rows, %d steps, batch %d, bf16 autocast %s", *facts)
    model.train()
    stopped_early = step_loop.run(
        pos,
        total,
        lambda epoch: length_grouped_batches(train.lengths, cfg.batch_size, cfg.seed, epoch),
        # looked up at each step, not bound here: tests replace ``accumulate`` to interrupt a run
        lambda batch: accumulate(model, train, batch, weights, cfg, pad_id, autocast),
        optimizer=opt,
        scheduler=sched,
        params=model.parameters(),
        checkpoint=checkpoint,
        checkpoint_every=cfg.checkpoint_every,
        desc="train",
        on_log=on_log,
        on_epoch_end=_after_epoch(model, pos, on_eval),
        deadline=time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else float("inf"),
    )
    checkpoint()
    model.eval()
    return {
        "steps": pos.step,
        "planned_steps": total,
        "epochs": pos.step / per_epoch,
        "final_loss": pos.running,
        "stopped_early": stopped_early,
        "probe_loss": probe_loss,
    }


def _optimiser(
    model: MultiTaskModel, cfg: TrainConfig, total: int
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW with the encoder at ``lr`` and the fresh heads at ``head_lr``, and a linear schedule
    warming up over ``warmup_ratio`` of the ``total`` steps."""
    head_params = list(model.heads.parameters())
    head_ids = {id(p) for p in head_params}
    enc_params = [p for p in model.parameters() if id(p) not in head_ids]
    opt = torch.optim.AdamW(
        [{"params": enc_params, "lr": cfg.lr}, {"params": head_params, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    return opt, get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total), total)


def _task_weights(
    model: MultiTaskModel, train: Encoded, cfg: TrainConfig
) -> dict[str, torch.Tensor]:
    """Class weights per task; ``DataError`` for a task with no labelled training row."""
    unlabelled = [t for t, y in train.labels.items() if not np.any(y != IGNORE)]
    if unlabelled:
        raise DataError(f"no training rows labelled for {unlabelled}")
    return {
        t: class_weights(y, model.tasks[t], cfg.class_weight_power) for t, y in train.labels.items()
    }


def _resumed(
    ckpt: Path, data_digest: str, model: MultiTaskModel, opt: torch.optim.Optimizer, sched: Any
) -> Position:
    """Load ``ckpt`` into the model, optimiser, scheduler and torch's random stream; returns where
    the run was. A checkpoint made on other data is refused (``DataError``)."""
    state = torch.load(ckpt, weights_only=False)
    if state["data_digest"] != data_digest:
        raise DataError(
            "checkpoint was trained on other data (dataset digest differs); not resuming"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    pos = Position.from_state(state)
    log.info(
        "train: resumed at step %d (epoch %d, batch %d)", pos.step, pos.epoch, pos.batch_in_epoch
    )
    return pos


def _after_epoch(
    model: MultiTaskModel, pos: Position, on_eval: Callable[[int, int], None] | None
) -> Callable[[], None] | None:
    """``on_eval(epoch, step)`` at each epoch's end, then the model back in training mode (an
    evaluation leaves it in eval mode); None without ``on_eval``."""
    if on_eval is None:
        return None

    def after() -> None:
        on_eval(pos.epoch, pos.step)
        model.train()

    return after


def _checkpointer(
    ckpt: Path,
    model: MultiTaskModel,
    opt: torch.optim.Optimizer,
    sched: Any,
    pos: Position,
    data_digest: str,
    cfg: TrainConfig,
) -> Callable[[], None]:
    """Writes the run's state at ``pos`` (read when called, so always the current position) to
    ``ckpt``."""

    def checkpoint() -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
        }
        extra = {"rng": torch.get_rng_state(), "data_digest": data_digest, "config": cfg.as_dict()}
        save_checkpoint(ckpt, {**state, **pos.state(), **extra})

    return checkpoint
