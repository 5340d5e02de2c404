"""The optimiser-step loop that the fine-tune (``train.fit``) and the masked-LM stage
(``pretrain.adapt``) share: batch order per epoch, gradient clipping, the learning-rate schedule,
the smoothed loss, progress, logging and checkpoint cadence, the time guard, and where a resumed run
picks up.

Contract:

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

LOG_EVERY = 20  # steps between on_log calls


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
    stopped = False
    try:
        while pos.step < total and not stopped:
            for batch in order(pos.epoch)[pos.batch_in_epoch :]:
                if pos.step >= total:
                    break
                if time.monotonic() > deadline:
                    log.warning(
                        "%s: time limit reached at step %d of %d; stopping", desc, pos.step, total
                    )
                    stopped = True
                    break
                optimizer.zero_grad(set_to_none=True)
                value = accumulate(batch)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                pos.step, pos.batch_in_epoch = pos.step + 1, pos.batch_in_epoch + 1
                # an exponential moving average: 2% of each new batch's loss
                pos.running = 0.98 * pos.running + 0.02 * value if pos.step > 1 else value
                bar.update(1)
                bar.set_postfix(
                    loss=f"{pos.running:.3f}", epoch=pos.epoch, refresh=False
                )  # redrawn at mininterval
                if on_log and pos.step % LOG_EVERY == 0:
                    lr = scheduler.get_last_lr()[0]
                    on_log(
                        {f"{desc}/loss": pos.running, f"{desc}/lr": lr, f"{desc}/epoch": pos.epoch},
                        pos.step,
                    )
                if checkpoint_every and pos.step % checkpoint_every == 0:
                    checkpoint()
            else:
                pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0
                checkpoint()
                if on_epoch_end:
                    on_epoch_end()
    finally:
        bar.close()
    return stopped
