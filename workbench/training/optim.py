"""The optimiser's learning-rate schedule, composed from torch's schedulers."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LinearLR, LRScheduler, SequentialLR


def linear_schedule(optimiser: Optimizer, warmup_steps: int, total_steps: int) -> LRScheduler:
    """Linear warm-up over ``warmup_steps`` (from 1/(warmup+1) of the rate up to it), then a
    linear decay that reaches 0 at ``total_steps`` and stays there."""
    decay = LinearLR(
        optimiser, start_factor=1.0, end_factor=0.0, total_iters=max(1, total_steps - warmup_steps)
    )
    if warmup_steps <= 0:
        return decay
    warmup = LinearLR(
        optimiser, start_factor=1.0 / (warmup_steps + 1), end_factor=1.0, total_iters=warmup_steps
    )
    return SequentialLR(optimiser, [warmup, decay], milestones=[warmup_steps])
