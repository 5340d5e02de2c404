"""What the two torch stages, the fine-tune (``trainer.fit``) and the masked-LM adaptation
(``trainer.pretrain``), share: the encoded rows, their batch order, micro-batches and padding, the
bf16 choice, checkpoint writing, and the optimiser-step loop itself (gradient clipping, the
learning-rate schedule, the smoothed loss, progress, logging and checkpoint cadence, the time guard,
and where a resumed run picks up).

Contract of ``run``:

- Each step is ``zero_grad``, ``accumulate(batch)`` (forward and backward; returns the batch's
  loss), clip the gradient norm of ``params`` to 1, ``optimizer.step``, ``scheduler.step``. Nothing
  here draws random numbers, so a run's weights depend only on the caller's ``accumulate`` and the
  batch order.
- ``order(epoch)`` is the epoch's batch order, a pure function of the epoch (and the caller's seed):
  a ``Position`` (steps done, epoch, batches done in it, smoothed loss) is all a resumed run needs
  to replay the rest and end with the weights, and the final loss, of a run that never stopped.
- ``checkpoint()`` is called every ``checkpoint_every`` steps (0: never) and at each epoch's end,
  which then calls ``on_epoch_end`` (e.g. validation). ``on_log(metrics, step)`` gets
  ``<desc>/loss``, ``/lr`` and ``/epoch`` every 20 steps.
- Past ``deadline`` (``time.monotonic()``) no new step starts; ``run`` returns True when that
  stopped it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

LOG_EVERY = 20  # steps between on_log calls


@dataclass
class Encoded:
    """Token ids and label indices of one split."""

    ids: list[list[int]]
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def lengths(self) -> list[int]:
        """Token count of each row (batching and micro-batching read it every step)."""
        return [len(r) for r in self.ids]


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Shuffle, sort within windows of 50 batches by length, cut into batches, shuffle the batches.

    Similar lengths share a batch (little padding), while the order stays random; deterministic per
    epoch.
    """
    rng = np.random.default_rng([seed, epoch])
    idx = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for lo in range(0, len(idx), window):
        chunk = sorted(idx[lo : lo + window].tolist(), key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def micro_batches(rows: Sequence[int], lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Split ``rows`` into pieces whose padded size (rows x longest row) is at most ``max_tokens``.

    Rows are taken longest first, so each piece holds similar lengths; a row longer than the budget
    gets a piece of its own. ``max_tokens`` <= 0: one piece. Every row is in exactly one piece.
    """
    if max_tokens <= 0:
        return [list(rows)]
    pieces: list[list[int]] = []
    for i in sorted(rows, key=lambda r: -lengths[r]):
        # longest first: the first row of a piece is its widest, so the padded size is len(piece) *
        # width
        if pieces and (len(pieces[-1]) + 1) * lengths[pieces[-1][0]] <= max_tokens:
            pieces[-1].append(i)
        else:
            pieces.append([i])
    return pieces


def use_bf16(setting: str) -> bool:
    """bfloat16 autocast roughly doubles CPU training speed where the CPU computes bf16 natively;
    weights stay fp32, so the export and its parity check are unaffected."""
    if setting in ("on", "off"):
        return setting == "on"
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, int64, padded with ``pad_id`` to the longest row of these
    rows only (dynamic padding)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` so that a reader sees the previous checkpoint or this one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash mid-write leaves the previous checkpoint intact


@dataclass
class Position:
    """Where a run is; saved in its checkpoints under these names."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    running: float = 0.0  # the smoothed loss

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "running": self.running,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Position:
        # checkpoints of fine-tunes from before the smoothed loss was saved lack "running"
        return cls(
            state["step"], state["epoch"], state["batch_in_epoch"], float(state.get("running", 0.0))
        )


def run(
    position: Position,
    total: int,
    order: Callable[[int], list[list[int]]],
    accumulate: Callable[[list[int]], float],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    params: Iterable[torch.Tensor],
    checkpoint: Callable[[], None],
    checkpoint_every: int,
    desc: str,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    on_epoch_end: Callable[[], None] | None = None,
    deadline: float = float("inf"),
) -> bool:
    """Step from ``position`` (updated in place) until ``total`` steps are done or ``deadline``
    passes; returns whether the deadline stopped it."""
    params = list(params)
    pos = position
    bar = tqdm(
        total=total,
        initial=pos.step,
        desc=desc,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
    try:
        while pos.step < total:
            for batch in order(pos.epoch)[pos.batch_in_epoch :]:
                if pos.step >= total:
                    break
                if time.monotonic() > deadline:
                    log.warning(
                        "%s: time limit reached at step %d of %d; stopping", desc, pos.step, total
                    )
                    return True
                _advance(pos, _step(batch, accumulate, optimizer, scheduler, params), bar)
                if on_log and pos.step % LOG_EVERY == 0:
                    lr = scheduler.get_last_lr()[0]
                    on_log(
                        {f"{desc}/loss": pos.running, f"{desc}/lr": lr, f"{desc}/epoch": pos.epoch},
                        pos.step,
                    )
                if checkpoint_every and pos.step % checkpoint_every == 0:
                    checkpoint()
            else:  # the epoch's batches are all done
                pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0
                checkpoint()
                if on_epoch_end:
                    on_epoch_end()
    finally:
        bar.close()
    return False


def _step(
    batch: list[int],
    accumulate: Callable[[list[int]], float],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    params: list[torch.Tensor],
) -> float:
    """One optimiser step on ``batch``; returns the batch's loss."""
    optimizer.zero_grad(set_to_none=True)
    value = accumulate(batch)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    return value


def _advance(pos: Position, value: float, bar: Any) -> None:
    """Count a finished step in ``pos`` (with the smoothed loss) and on the progress bar."""
    pos.step, pos.batch_in_epoch = pos.step + 1, pos.batch_in_epoch + 1
    # an exponential moving average: 2% of each new batch's loss
    pos.running = 0.98 * pos.running + 0.02 * value if pos.step > 1 else value
    bar.update(1)
    bar.set_postfix(loss=f"{pos.running:.3f}", epoch=pos.epoch, refresh=False)  # at mininterval
